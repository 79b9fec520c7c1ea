"""`python -m edgefn`: the same as the `edgefn` command."""

import sys

from .cli import main

sys.exit(main())
