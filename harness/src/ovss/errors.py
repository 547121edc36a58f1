"""The harness's one error type: a one-line message for the user, never a traceback."""


class OvssError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""
