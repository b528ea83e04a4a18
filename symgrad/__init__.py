"""symgrad: symbolic reverse-mode gradients compiled to plain NumPy / CuPy modules.

Public API::

    model = symgrad.Model(expr, wrt=[...])        # a SymPy expression to differentiate
    mod = symgrad.compile(model, target="numpy")  # the generated module, imported
    value, grads = mod.value_and_grad(**inputs)

``symgrad.tape`` is the independent numeric reverse-mode oracle; ``symgrad.verify`` and
``symgrad.testing`` compare generated modules with it and with finite differences.
"""
from .model import Model, SymgradError, load_models
from . import tape  # noqa: E402 - the numeric oracle, importable as symgrad.tape

__version__ = "0.1.0"
__all__ = ["Model", "SymgradError", "compile", "generate", "load_models", "__version__"]


def generate(model, target: str = "numpy") -> str:
    """Return the source text of the generated module for ``model``."""
    from .emit import generate as _generate
    return _generate(model, target)


def compile(model, target: str = "numpy"):  # noqa: A001 - the contract's name
    """Generate the module for ``model`` and import it (without writing a file)."""
    from .emit import load_source
    return load_source(generate(model, target), (model.name or "model") + "_" + target)
