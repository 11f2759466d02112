"""The one exception type for users' mistakes (bad files, bad params, bad input).

The CLI prints a `UserError` as one line (`error: ...`) and exits with code 2; anything else is
our bug and keeps its traceback. Subclasses say what kind of mistake it is, for callers that
answer differently (the HTTP server maps them to status codes); the CLI treats them alike.
"""


class UserError(Exception):
    """A problem the user can fix: the message names the file, row, column or param key."""


class TooLarge(UserError):
    """An input above a size limit (e.g. an image with more pixels than allowed: a decompression bomb)."""


class UnreadableImage(UserError):
    """Bytes that are not an image Pillow can decode (or a truncated one)."""


def first_line(what: object, limit: int = 200) -> str:
    """The first line of an exception's (or any object's) text, for a one-line message; the type's
    name when the text is empty (an EOFError of an empty file says nothing)."""
    text = str(what).strip()
    if not text:
        return type(what).__name__ if isinstance(what, BaseException) else ""
    return text.splitlines()[0][:limit]
