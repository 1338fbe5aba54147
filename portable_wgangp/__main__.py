"""`python -m portable_wgangp` runs the command-line interface."""

import sys

from portable_wgangp.cli import main

sys.exit(main())
