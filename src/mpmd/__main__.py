"""`python -m mpmd`: the same as the `mpmd` console script."""

import sys

from mpmd.cli import main

sys.exit(main())
