"""The error a user can fix."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""
