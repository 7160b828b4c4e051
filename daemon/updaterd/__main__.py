"""`python -m updaterd` runs the same command line as the `updaterd` script."""

from updaterd.cli import main

raise SystemExit(main())
