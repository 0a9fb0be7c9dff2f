"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class UsageError(Exception):
    """Bad input: the message says what is wrong and what to do."""
