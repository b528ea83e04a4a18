"""``symgrad.to_jax(module)``: a generated module as a differentiable JAX function (contract 4f).

    f = symgrad.to_jax(module)
    jax.jit(jax.grad(lambda w: f(w=w, X=X, y=y)))(w0)

The module runs on the host through ``jax.pure_callback``, so ``f`` works under ``jax.jit``; its
``jax.custom_vjp`` runs the module's ``vjp`` (or ``value_and_grad`` times the incoming gradient,
for a one-entry value), so ``jax.grad``/``jax.vjp`` work.  Forward mode (``jax.jvp``) is not
available (a ``custom_vjp`` function has none).  Inputs that are not wrt get a zero cotangent.

The value's shape and dtype are found by running ``forward`` on zeros of the inputs' shapes and
dtypes (on a fixed random draw where zeros raise: the inverse of a zero matrix) once per
distinct set of shapes (at trace time under ``jit``).  Reverse mode of a value of several entries
without the module's ``vjp`` is a SymgradError when traced.  Under ``jax.vmap`` the
callback loops over the batch (``vmap_method="sequential"``, always correct); other values are
passed to ``jax.pure_callback`` as given: ``"broadcast_all"`` (the unbatched inputs broadcast
to the batch) suits a module whose value is elementwise in every input.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import core


def to_jax(module, vmap_method: str = "sequential"):
    """A function of the module's inputs as keyword JAX arrays that returns its value."""
    owner = f"to_jax({core.model_name(module)})"
    names, wrt = tuple(module.INPUTS), tuple(module.WRT)
    at = {n: i for i, n in enumerate(names)}
    specs = {}

    def value_spec(args):
        key = tuple((a.shape, np.dtype(a.dtype)) for a in args)
        if key not in specs:
            v = _probe(module, names, key)
            specs[key] = jax.ShapeDtypeStruct(v.shape, jax.dtypes.canonicalize_dtype(v.dtype))
        return specs[key]

    def callback(fn, spec, *args):
        return jax.pure_callback(fn, spec, *args, vmap_method=vmap_method)

    @jax.custom_vjp
    def f(*args):
        spec = value_spec(args)

        def forward(*a):
            return np.asarray(module.forward(**dict(zip(names, a))), spec.dtype)
        return callback(forward, spec, *args)

    def f_fwd(*args):
        return f(*args), args

    def f_bwd(args, cotangent):
        if not hasattr(module, "vjp") and np.size(cotangent) != 1:   # here, not inside the callback
            core.need(owner, module, "vjp")
        grad_specs = tuple(jax.ShapeDtypeStruct(args[at[w]].shape, args[at[w]].dtype) for w in wrt)

        def backward(c, *a):
            grads = core.vjp(owner, module, c, dict(zip(names, a)))
            return tuple(np.asarray(grads[w], s.dtype) for w, s in zip(wrt, grad_specs))
        grads = dict(zip(wrt, callback(backward, grad_specs, cotangent, *args)))
        return tuple(grads[n] if n in grads else jnp.zeros_like(a) for n, a in zip(names, args))

    f.defvjp(f_fwd, f_bwd)

    def call(**inputs):
        if set(inputs) != set(names):
            raise TypeError(f"{owner}: takes the inputs {list(names)} by keyword, got {sorted(inputs)}")
        args = []
        for n in names:
            a = jnp.asarray(inputs[n])
            args.append(a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(float))
        return f(*args)

    call.__name__ = call.__qualname__ = core.model_name(module)
    call.__doc__ = f"{core.model_name(module)}({', '.join(names)}) as a differentiable JAX function."
    call.module = module
    return call


def _probe(module, names, key):
    """The module's value on inputs of the shapes and dtypes ``key``: on zeros, or where zeros
    raise (the inverse or solve of a zero matrix), on a fixed random draw."""
    rng = np.random.default_rng(0)
    fills = (lambda s, d: np.zeros(s, d), lambda s, d: np.asarray(rng.standard_normal(s), d))
    for k, fill in enumerate(fills):
        try:
            with np.errstate(all="ignore"):
                return np.asarray(module.forward(**{n: fill(s, d) for n, (s, d) in zip(names, key)}))
        except Exception:  # noqa: BLE001 - whatever the module raises; the last fill's error is the user's
            if k == len(fills) - 1:
                raise
