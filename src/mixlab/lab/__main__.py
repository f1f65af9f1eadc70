"""`python -m mixlab.lab` is the `mixlab` command."""

import sys

from mixlab.lab.cli import main

sys.exit(main())
