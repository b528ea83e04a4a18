"""The one exception type of user errors (its own module: the compiler core imports no SymPy)."""


class SymgradError(ValueError):
    """A user error: bad model, unsupported construct, bad input shape.  The message says which."""
