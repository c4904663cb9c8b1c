"""Entry point for `accelerate launch` in tests: runs `text4seg evaluate` with the given arguments."""

import sys

from text4seg.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
