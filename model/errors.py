"""The error boundary of the PyTorch wing (it never imports ``pipeline``): ``UserError`` is a problem the user
can fix (a missing checkpoint, bad eval data, a bad option). ``refinery`` prints it as one line and exits 2;
any other exception shows its traceback."""


class UserError(Exception):
    """Base of every model-wing error whose message is meant for the user (printed without a traceback)."""


class UserValueError(UserError, ValueError):
    """A bad value the user gave: a path, an option, a model or evaluation setting."""
