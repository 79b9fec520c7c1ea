"""`python -m edgefn.cli`: the same as the `edgefn` command."""

import sys

from .main import main

sys.exit(main())
