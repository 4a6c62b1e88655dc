"""`python -m raydaa.cli`: the `raydaa` console script without an installed entry point."""

import sys

from raydaa.cli import main

sys.exit(main())
