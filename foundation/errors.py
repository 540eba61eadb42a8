"""The base of every error that bad input raises."""


class UserError(Exception):
    """One line naming the file, key or value at fault; the entry points exit 2 on it."""
