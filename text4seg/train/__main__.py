"""`python -m text4seg.train RECIPE [key=value ...]` (also under `accelerate launch -m text4seg.train`)."""

import sys

from .cli import main

sys.exit(main())
