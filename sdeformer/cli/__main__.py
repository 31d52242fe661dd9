"""`python -m sdeformer.cli`: the `sdeformer` command line."""

import sys

from . import main

sys.exit(main())
