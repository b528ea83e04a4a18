"""Handing a generated module's derivatives to the tools that use them (contract 4f).

* :class:`~symgrad.bridges.objective.Objective` -- a scalar model as ``fun``/``jac``/``hessp``/``hess``
  of one flat vector, for ``scipy.optimize``;
* :class:`~symgrad.bridges.ode.OdeSystem` -- a vector model as the right-hand side ``fun(t, y)`` of an
  ODE and its Jacobian ``jac(t, y)``, for ``scipy.integrate.solve_ivp``;
* :func:`~symgrad.bridges.to_torch.to_torch` and :func:`~symgrad.bridges.to_jax.to_jax` -- the module as
  a differentiable PyTorch / JAX function, through its own ``vjp`` (and ``jvp``, ``hvp``).

Nothing here imports SciPy, PyTorch or JAX until it is used; ``symgrad.Objective``, ``symgrad.OdeSystem``,
``symgrad.to_torch`` and ``symgrad.to_jax`` import these modules lazily.
"""
