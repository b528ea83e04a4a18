"""A fake ``cupy`` for running the CuPy target's generated modules without a GPU.

``fake_cupy()`` is a module object with the few CuPy names the generated modules use, NumPy
underneath; its ``ElementwiseKernel`` evaluates the kernel's C body with NumPy through a small
C-expression interpreter, with CuPy's typing rules (one dtype per ``T``, scalars cast to ``T``,
at least one array).  Install it with ``monkeypatch.setitem(sys.modules, "cupy", fake_cupy())``
before loading a generated CuPy module.  Shared by tests/test_cupy_target.py and tests/test_fuzz.py.
"""
from __future__ import annotations

import re
import sys
import types

import numpy as np


# -- a fake cupy: NumPy underneath, kernels interpreted from their C text ------------------------
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)|([A-Za-z_]\w*)"
                    r"|(&&|\|\||==|!=|<=|>=|[-+*/()<>!?:,]))")
def _c_functions() -> dict:
    """C function name -> NumPy function, derived from the op table: every op whose C template is a
    plain call ``f({0})`` and whose NumPy template is ``{m}.g({0})`` gives ``f -> numpy.g``.  The
    few C library functions that only appear inside other templates are added by hand."""
    from symgrad.ops import OPS
    out = {}
    for op in OPS.values():
        c = re.fullmatch(r"(\w+)\(\{0\}(?:, \{1\})?\)", op.c or "")
        py = re.fullmatch(r"\{m\}\.(\w+)\(\{0\}(?:, \{1\})?\)", op.code if isinstance(op.code, str) else "")
        if c and py:
            out[c.group(1)] = getattr(np, py.group(1))
        elif c and op.special:  # a special function: SciPy's, as the NumPy module calls it
            import scipy.special
            out[c.group(1)] = getattr(scipy.special, op.special)
    return {**out, "pow": np.power, "isnan": np.isnan, "fmax": np.fmax, "fmin": np.fmin}


_FUNCS = _c_functions()
_BINARY = [("||", np.logical_or), ("&&", np.logical_and), ("==", np.equal), ("!=", np.not_equal),
           (("<", "<=", ">", ">="), None), (("+", "-"), None), (("*", "/"), None)]
_OPFN = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "+": np.add,
         "-": np.subtract, "*": np.multiply, "/": np.divide, "==": np.equal, "!=": np.not_equal,
         "&&": np.logical_and, "||": np.logical_or}
_LEVELS = [("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/")]


class _C:
    """Evaluates one C expression of the kernels' subset with NumPy values."""

    def __init__(self, text, env, T):
        self.toks, pos = [], 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            assert m, f"cannot read C at {text[pos:]!r}"
            self.toks.append(m.group(1) and ("num", m.group(1)) or m.group(2) and ("id", m.group(2))
                             or ("op", m.group(3)))
            pos = m.end()
        self.i, self.env, self.T = 0, env, T

    def peek(self, *values):
        return self.i < len(self.toks) and self.toks[self.i][1] in values

    def take(self, value=None):
        tok = self.toks[self.i]
        assert value is None or tok[1] == value, (tok, value)
        self.i += 1
        return tok

    def run(self):
        v = self.ternary()
        assert self.i == len(self.toks), self.toks[self.i:]
        return v

    def ternary(self):
        c = self.binary(0)
        if self.peek("?"):
            self.take("?")
            a = self.ternary()
            self.take(":")
            return np.where(c, a, self.ternary())
        return c

    def binary(self, level):
        if level == len(_LEVELS):
            return self.unary()
        v = self.binary(level + 1)
        while self.peek(*_LEVELS[level]):
            v = _OPFN[self.take()[1]](v, self.binary(level + 1))
        return v

    def unary(self):
        if self.peek("-"):
            self.take()
            return np.negative(self.unary())
        if self.peek("!"):
            self.take()
            return np.logical_not(self.unary())
        if self.peek("(") and self.toks[self.i + 1][1] in ("T", "bool") and self.toks[self.i + 2][1] == ")":
            self.i += 1
            dt = self.T if self.take()[1] == "T" else np.dtype(bool)
            self.take(")")
            return np.asarray(self.unary(), dtype=dt)
        return self.primary()

    def primary(self):
        kind, v = self.take()
        if kind == "num":
            return float(v) if any(ch in v for ch in ".eE") else int(v)
        if kind == "id" and self.peek("("):
            self.take("(")
            args = [self.ternary()]
            while self.peek(","):
                self.take(",")
                args.append(self.ternary())
            self.take(")")
            return _FUNCS[v](*args)
        if kind == "id":
            return self.env[v]
        assert v == "(", v
        out = self.ternary()
        self.take(")")
        return out


def _params(text):
    return [tuple(p.split()) for p in text.split(",")] if text.strip() else []


class FakeElementwiseKernel:
    registry: list = []

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        assert re.fullmatch(r"[A-Za-z_]\w*", name), name
        self.ins, self.outs, self.operation, self.name = _params(in_params), _params(out_params), operation, name
        names = [n for _, n in self.ins + self.outs]
        assert len(set(names)) == len(names) and "i" not in names, names
        FakeElementwiseKernel.registry.append(self)

    def __call__(self, *args):
        assert len(args) == len(self.ins), (self.name, len(args), len(self.ins))
        # NumPy scalars stand for CuPy's 0-d arrays (what indexing and full sums give there)
        args = [np.asarray(a) if isinstance(a, np.generic) else a for a in args]
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if not arrays:
            raise ValueError("Loop size is undecided.")  # as CuPy
        T = None
        for (t, n), a in zip(self.ins, args):
            if isinstance(a, np.ndarray) and t == "T":
                if T is not None and a.dtype != T:
                    raise TypeError(f"Type is mismatched. {n} {a.dtype} {T} T")  # as CuPy
                T = a.dtype
            elif isinstance(a, np.ndarray):
                assert a.dtype == bool, (n, a.dtype)
        assert T is not None and T.kind == "f", T
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        env = {n: np.asarray(a, dtype=T if t == "T" else bool) for (t, n), a in zip(self.ins, args)}
        code = " ".join(line.split("//")[0] for line in self.operation.splitlines())
        with np.errstate(all="ignore"):
            for stmt in filter(None, (s.strip() for s in code.split(";"))):
                lhs, rhs = stmt.split("=", 1)
                *decl, name = lhs.split()
                value = np.asarray(_C(rhs, env, T).run())
                want = {n: t for t, n in self.ins + self.outs}[name] if not decl else decl[0]
                dt = T if want == "T" else np.dtype(bool)
                assert value.dtype == dt or value.dtype.kind in "bi", (self.name, stmt, value.dtype)
                env[name] = value.astype(dt)
        outs = [np.array(np.broadcast_to(env[n], shape)) for _, n in self.outs]
        return outs[0] if len(outs) == 1 else tuple(outs)


_CUPY_NAMES = ["asarray", "array", "shape", "result_type", "promote_types", "full", "eye", "zeros",
               "zeros_like", "broadcast_to", "trace", "sum", "exp", "log", "ndarray", "float32", "float64",
               "linalg", "diagflat", "diagonal", "where", "nan", "kron", "einsum", "dtype",
               "arange", "clip", "take"]  # cupy.linalg: inv, det, slogdet, solve


def _fake_cupyx():
    """cupyx.scipy.special as SciPy's, where the real cupyx is not installed (never shadowing it)."""
    import importlib.util
    if "cupyx" in sys.modules or importlib.util.find_spec("cupyx") is not None:
        return
    import scipy.special
    for name in ("cupyx", "cupyx.scipy"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["cupyx.scipy.special"] = scipy.special
    sys.modules["cupyx"].scipy = sys.modules["cupyx.scipy"]
    sys.modules["cupyx.scipy"].special = scipy.special


def fake_cupy():
    _fake_cupyx()
    mod = types.ModuleType("cupy")
    for name in _CUPY_NAMES:
        setattr(mod, name, getattr(np, name))
    mod.asnumpy = np.asarray
    mod.ElementwiseKernel = FakeElementwiseKernel
    mod.is_available = lambda: False
    return mod
