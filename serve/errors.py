"""The one exception type for users' mistakes (bad files, bad params, bad input).

The CLI prints a `UserError` as one line (`error: ...`) and exits with code 2; anything else is
our bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix: the message names the file, row, column or param key."""
