"""Seed 004 -- "NN Learning": softmax cross-entropy network, line fit by gradient descent, Legendre P3.

* ``seed004_mlp_ce``: the notes' one-hidden-layer network, z = W x + b1, h = ReLU(z),
  theta = U h + b2, y_hat = softmax(theta), J = CE(y, y_hat), for a batch whose rows are the
  samples: X (N x Dx), W (Dh x Dx), b1 (Dh x 1), U (Nc x Dh), b2 (Nc x 1), one-hot Y (N x Nc).
  J = sum_i [log sum_k exp(theta_ik) - sum_k Y_ik theta_ik]; the row-wise log-sum-exp is
  ``(Theta.applyfunc(exp) * OneMatrix(Nc, 1)).applyfunc(log)``.  Gradients for W, b1, U, b2 and X
  (the notes derive all five).
* ``seed004_ce_logits``: the same CE as a function of the logits Theta alone -- the notes'
  identity (7): dJ/dtheta = y_hat - y.
* ``seed004_line_fit``: the notes' ``step_gradient`` for y = m x + b: its per-point gradients
  -x (y - (m x + b)) and -(y - (m x + b)) are those of (y - (m x + b))**2 / 2; x and y are bound
  to the arrays of points, b and m are scalars (their gradients are summed over the points).
* ``seed004_legendre``: y_pred = a + b P3(c + d x), P3(t) = (5 t**3 - 3 t) / 2, loss
  (y_pred - y)**2 summed over the points -- the notes' custom-autograd LegendrePolynomial3 fit,
  with the derivative of P3 left to symgrad.
"""
import sympy as sp
from sympy import Max, MatrixSymbol, OneMatrix, Trace, exp, log

import symgrad

N, Dx, Dh, Nc = sp.symbols("N Dx Dh Nc", integer=True, positive=True)
X = MatrixSymbol("X", N, Dx)
W = MatrixSymbol("W", Dh, Dx)
b1 = MatrixSymbol("b1", Dh, 1)
U = MatrixSymbol("U", Nc, Dh)
b2 = MatrixSymbol("b2", Nc, 1)
Y = MatrixSymbol("Y", N, Nc)


def cross_entropy(theta):
    """sum over rows of logsumexp(theta_i) - y_i . theta_i (Y one-hot)."""
    lse = (theta.applyfunc(exp) * OneMatrix(Nc, 1)).applyfunc(log)      # (N x 1)
    return Trace(OneMatrix(1, N) * lse) - Trace(Y.T * theta)


Z = X * W.T + OneMatrix(N, 1) * b1.T
Hid = Z.applyfunc(lambda t: Max(t, 0))
Theta = Hid * U.T + OneMatrix(N, 1) * b2.T
mlp_ce = symgrad.Model(cross_entropy(Theta), wrt=[W, b1, U, b2, X], name="seed004_mlp_ce")

Logits = MatrixSymbol("Theta", N, Nc)
ce_logits = symgrad.Model(cross_entropy(Logits), wrt=[Logits], name="seed004_ce_logits")

x, y, m, b = sp.symbols("x y m b")
line_fit = symgrad.Model((y - (m * x + b)) ** 2 / 2, wrt=[b, m], name="seed004_line_fit")

a, c, d = sp.symbols("a c d")


def P3(t):
    return sp.Rational(1, 2) * (5 * t ** 3 - 3 * t)


legendre = symgrad.Model((a + b * P3(c + d * x) - y) ** 2, wrt=[a, b, c, d], name="seed004_legendre")
