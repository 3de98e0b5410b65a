"""`python -m mpmd`: the same as the `mpmd` command."""

from mpmd.cli import main

raise SystemExit(main())
