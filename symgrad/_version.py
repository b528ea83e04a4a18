"""The version of symgrad: one source, read by ``pyproject.toml`` and re-exported as ``symgrad.__version__``."""
__version__ = "0.1.0"
