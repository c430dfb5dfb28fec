"""`python -m ibrar ...` is the `ibrar` command (and what torchrun launches)."""

import sys

from ibrar.cli import main

sys.exit(main())
