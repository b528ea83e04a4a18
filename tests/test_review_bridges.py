"""A hostile user's review of the bridges (contract 4f) and the sparse derivatives (4e).

Oracles, none of them the code under test: the same formula written in NumPy / jax.numpy and
differentiated by JAX; the tape (``symgrad.tape``).
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symgrad
from symgrad import tape
from symgrad.errors import SymgradError

d = sp.Symbol("d", integer=True, positive=True)


# ---- to_jax -----------------------------------------------------------------------------------------
def test_to_jax_of_a_model_with_an_inverse(jax64):
    """The value's shape was found by running forward on zeros: inv(0) is a LinAlgError, so every
    model with an inverse or a solve failed in to_jax, under jit or not."""
    jax, jnp = jax64, pytest.importorskip("jax.numpy")
    W, v = sp.MatrixSymbol("W", d, d), sp.MatrixSymbol("v", d, 1)
    mod = symgrad.compile(symgrad.Model((v.T * W.inv() * v)[0, 0], wrt=[W, v], name="inv_quad"), emit="vjp")
    f = symgrad.to_jax(mod)
    rng = np.random.default_rng(0)
    Wv, vv = rng.standard_normal((3, 3)) + 3 * np.eye(3), rng.standard_normal((3, 1))

    def ref(W, v):
        return (v.T @ jnp.linalg.solve(W, v))[0, 0]
    assert float(f(W=Wv, v=vv)) == pytest.approx(float(ref(Wv, vv)), rel=1e-13)
    grads = jax.jit(jax.grad(lambda W, v: f(W=W, v=v), argnums=(0, 1)))(Wv, vv)
    for g, r in zip(grads, jax.grad(ref, argnums=(0, 1))(Wv, vv)):
        np.testing.assert_allclose(g, r, rtol=1e-11)


def test_to_jax_broadcast_all_vmap_of_an_elementwise_module(jax64):
    """vmap_method="broadcast_all" hands the whole batch to one call: the callbacks reshaped the
    batched value and gradients to the unbatched shape (a ValueError inside the callback)."""
    jax, jnp = jax64, pytest.importorskip("jax.numpy")
    a, b = sp.symbols("a b")
    mod = symgrad.compile(symgrad.Model(sp.exp(a) * b ** 2, wrt=[a, b], name="ew_bcast"), emit="vjp")
    f = symgrad.to_jax(mod, vmap_method="broadcast_all")

    def ref(a, b):
        return jnp.exp(a) * b ** 2
    A, B = np.linspace(0, 1, 5), np.linspace(1, 2, 5)
    np.testing.assert_allclose(jax.vmap(lambda a, b: f(a=a, b=b))(A, B), ref(A, B), rtol=1e-14)
    grads = jax.jit(jax.vmap(jax.grad(lambda a, b: f(a=a, b=b), argnums=(0, 1))))(A, B)
    for g, r in zip(grads, jax.vmap(jax.grad(ref, argnums=(0, 1)))(A, B)):
        np.testing.assert_allclose(g, r, rtol=1e-14)
    # one input batched, the other not (broadcast to the batch; its gradient summed over it)
    np.testing.assert_allclose(jax.vmap(lambda a: f(a=a, b=2.0))(A), ref(A, 2.0), rtol=1e-14)
    g = jax.grad(lambda b: jax.vmap(lambda a: f(a=a, b=b))(A).sum())(2.0)
    assert float(g) == pytest.approx(float(jax.grad(lambda b: ref(A, b).sum())(2.0)), rel=1e-14)


def test_to_jax_grad_of_an_array_value_without_vjp_is_a_clear_error(jax64):
    """Without vjp, reverse mode of an array value raised inside the host callback: a
    JaxRuntimeError 'INTERNAL: CpuCallback error' with the SymgradError buried in its text."""
    jax = jax64
    v = sp.MatrixSymbol("v", d, 1)
    f = symgrad.to_jax(symgrad.compile(symgrad.Model(v.applyfunc(sp.exp), wrt=[v], name="exp_novjp")))
    np.testing.assert_allclose(f(v=np.zeros((3, 1))), np.ones((3, 1)))        # forward is fine
    with pytest.raises(SymgradError, match=r'has no vjp\(\).*emit="vjp"'):
        jax.grad(lambda v: f(v=v).sum())(np.ones((3, 1)))


# ---- to_torch ---------------------------------------------------------------------------------------
def test_to_torch_array_value_runs_forward_and_vjp_not_value_and_grad():
    """A wrt tensor requiring grad made every forward call run value_and_grad, whose gradients
    (of sum(value)) an array value never uses: a backward pass wasted on each call (its backward
    then ran vjp).  After the first call for a set of shapes, forward runs forward."""
    torch = pytest.importorskip("torch")
    N, h = sp.symbols("N h", integer=True, positive=True)
    X, W = sp.MatrixSymbol("X", N, d), sp.MatrixSymbol("W", d, h)
    mod = symgrad.compile(symgrad.Model((X * W).applyfunc(sp.tanh), wrt=[W], name="tanh_layer"), emit="vjp")
    calls = {"forward": 0, "value_and_grad": 0, "vjp": 0}

    class Counting:
        MODEL, INPUTS, WRT, SHAPES = mod.MODEL, mod.INPUTS, mod.WRT, mod.SHAPES

        def __getattr__(self, name):
            if name not in calls:
                raise AttributeError(name)

            def call(*args, **kwargs):
                calls[name] += 1
                return getattr(mod, name)(*args, **kwargs)
            return call
    f = symgrad.to_torch(Counting())
    rng = np.random.default_rng(4)
    Xt, W0 = torch.from_numpy(rng.standard_normal((6, 3))), rng.standard_normal((3, 2))
    for step in range(3):
        W = torch.tensor(W0, requires_grad=True)
        f(X=Xt, W=W).square().sum().backward()
        Wr = torch.tensor(W0, requires_grad=True)
        torch.tanh(Xt @ Wr).square().sum().backward()                  # torch's own autograd
        torch.testing.assert_close(W.grad, Wr.grad, rtol=1e-12, atol=1e-12)
    assert calls == {"forward": 2, "value_and_grad": 1, "vjp": 3}


# ---- Objective --------------------------------------------------------------------------------------
def test_objective_pack_after_shapes_were_inferred_says_where_they_came_from():
    """fun before pack infers the shapes (a scalar Symbol is a scalar); a later pack with another
    shape said '(fixed by the first pack)', of a pack that never ran."""
    W, v, a = sp.MatrixSymbol("W", d, d), sp.MatrixSymbol("v", d, 1), sp.Symbol("a")
    mod = symgrad.compile(symgrad.Model((v.T * W * v)[0, 0] + a ** 2, wrt=[W, a], name="quad_a"))
    obj = symgrad.Objective(mod, v=np.ones((3, 1)))
    assert obj.fun(np.r_[np.eye(3).ravel(), 2.0]) == pytest.approx(7.0)
    with pytest.raises(SymgradError, match=r"'a' has shape \(2,\).*\(\).*before any pack.*pack\(\) first"):
        obj.pack(W=np.eye(3), a=np.ones(2))
    obj = symgrad.Objective(mod, v=np.ones((3, 1)))
    obj.pack(W=np.eye(3), a=np.ones(2))
    with pytest.raises(SymgradError, match=r"'a' has shape \(\), but the layout has \(2,\) \(fixed by the first pack\)"):
        obj.pack(W=np.eye(3), a=1.0)
