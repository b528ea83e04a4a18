"""Seed 000 -- "Gradients, broadcasting and backpropagation": a linear layer y = x W + b with MSE.

Shapes as in the notes: X is (N x M) (rows are samples), W is (M x H), the bias b is a row (1 x H)
broadcast over the rows as ``OneMatrix(N, 1) * b``, the target Y is (N x H).

* ``seed000_lin``: the layer itself, y = X W + b (a matrix-valued model).  The gradient of
  ``sum(y)`` is the notes' ``lin_grad`` with ``y.g`` = ones: b.g = y.g.sum(0), W.g = X.T @ y.g,
  X.g = y.g @ W.T.
* ``seed000_lin_mse``: L = mean((X W + b - Y)**2) over all N*H entries, written as
  Trace(E.T E) / (N H); its gradients are the notes' ``mse_grad`` + ``lin_grad``.

``examples/run_seed000.py`` trains it by gradient descent exactly as the notes do.
"""
import sympy as sp
from sympy import MatrixSymbol, OneMatrix, Trace

import symgrad

N, M, H = sp.symbols("N M H", integer=True, positive=True)
X = MatrixSymbol("X", N, M)
W = MatrixSymbol("W", M, H)
b = MatrixSymbol("b", 1, H)
Y = MatrixSymbol("Y", N, H)

y_pred = X * W + OneMatrix(N, 1) * b
lin = symgrad.Model(y_pred, wrt=[W, b, X], name="seed000_lin")

E = y_pred - Y
lin_mse = symgrad.Model(Trace(E.T * E) / (N * H), wrt=[W, b, X], name="seed000_lin_mse")
