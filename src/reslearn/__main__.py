"""``python -m reslearn``: the same command line as the ``reslearn`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
