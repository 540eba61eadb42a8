"""The one base class of every error a user can fix."""


class UserError(Exception):
    """Bad input (a config key, a data or weight file, a cache, a checkpoint): one line naming the file, key
    or value at fault and what to do. Every entry point prints it as `error: <line>` and exits with status 2;
    anything else that goes wrong is a bug and keeps its traceback."""
