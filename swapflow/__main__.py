"""`python -m swapflow …` is the `swapflow` command."""

import sys

from swapflow.cli import main

sys.exit(main())
