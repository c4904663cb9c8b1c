"""`python -m text4seg COMMAND …` (and `accelerate launch -m text4seg evaluate …`): the `text4seg` CLI."""

import sys

from text4seg.cli import main

sys.exit(main())
