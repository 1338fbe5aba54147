"""`python -m portable_wgangp` runs the command-line interface."""

from portable_wgangp.cli import entry_point

entry_point()
