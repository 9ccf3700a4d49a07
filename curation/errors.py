"""Errors a user can cause. The CLI prints them as one line naming the fix, never a traceback."""


class UserError(Exception):
    """A problem with the job's configuration or inputs that the user can fix."""
