"""The error boundary of the Beam wing: ``UserError`` is a problem the user can fix (a config typo, a missing
or unreadable input, a refused option). The CLI prints a ``UserError`` as one line and exits 2; every other
exception is a bug (ours or a library's) and shows its traceback. Subclasses keep their historical builtin
base (``ValueError``, ``OSError``) so ``except ValueError`` callers keep working."""


class UserError(Exception):
    """Base of every error whose message is meant for the user (printed without a traceback)."""


class UserValueError(UserError, ValueError):
    """A bad value the user gave: an input path or format, an option, a parameter."""
