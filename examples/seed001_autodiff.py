"""Seed 001 -- "Lecture 6: Deep neural networks and backpropagation": the lecture's examples.

Scalar chain-rule examples (x, w are scalars; they may also be bound to arrays):

* ``seed001_log_sigmoid``: L = -log(sigmoid(w * x**2)), the lecture's a = x**2, b = w a,
  c = sigmoid(b), g = log c, L = -g.
* ``seed001_reuse``: a = x**2, b = 5a, c = log a, g = b c, L = -g (a value used twice).
* ``seed001_total``: a = x**2, b = 5a, c = a b, L = -c (partial vs total derivative:
  dc/da = 10a, dL/dx = -20 x**3, i.e. -160 at x = 2).

Vector / matrix examples (rows of X are observations):

* ``seed001_linreg_mse``: L = (1/N) sum((y - X w)**2); the lecture derives
  dL/dw = -2/N (y - X w)^T X and, for the matrix VJP, dL/dX = dL/da w^T.
* ``seed001_nll``: the one-hidden-layer sigmoid network f(X) = sigmoid(X W^T) w0 with the logistic
  negative log-likelihood NLL = -sum log sigmoid((2y - 1) * f(X)) (X: N x d, W: h x d, w0: h x 1,
  y: N x 1 of 0/1 labels).
* ``seed001_nll_bernoulli``: the same NLL in its first form,
  -sum[y log p + (1 - y) log(1 - p)], p = sigmoid(f(X)) -- equal to ``seed001_nll``.
* ``seed001_nll_deep``: the 2-hidden-layer network sigmoid(sigmoid(X W1^T) W2^T) w0, same NLL.
"""
import sympy as sp
from sympy import HadamardProduct, MatrixSymbol, OneMatrix, Trace, exp, log

import symgrad


def sigmoid(t):
    return 1 / (1 + exp(-t))


# ---- scalar chain-rule examples ------------------------------------------------------------------
x, w = sp.symbols("x w")
log_sigmoid = symgrad.Model(-log(sigmoid(w * x ** 2)), wrt=[x, w], name="seed001_log_sigmoid")

a = x ** 2
reuse = symgrad.Model(-((5 * a) * log(a)), wrt=[x], name="seed001_reuse")
total = symgrad.Model(-(a * (5 * a)), wrt=[x], name="seed001_total")

# ---- linear regression MSE ------------------------------------------------------------------------
N, d, h, h2 = sp.symbols("N d h h2", integer=True, positive=True)
X = MatrixSymbol("X", N, d)
wv = MatrixSymbol("w", d, 1)
y = MatrixSymbol("y", N, 1)
resid = y - X * wv
linreg_mse = symgrad.Model(Trace(resid.T * resid) / N, wrt=[wv, X], name="seed001_linreg_mse")

# ---- the sigmoid network and its negative log-likelihood ------------------------------------------
W = MatrixSymbol("W", h, d)
w0 = MatrixSymbol("w0", h, 1)
ones_row = OneMatrix(1, N)


def nll_of(f):
    """-sum_i log sigmoid((2 y_i - 1) f_i) for an (N x 1) column f."""
    signs = 2 * y - OneMatrix(N, 1)
    t = HadamardProduct(signs, f)
    return -Trace(ones_row * t.applyfunc(lambda u: log(sigmoid(u))))


f_net = X * W.T
f_net = f_net.applyfunc(sigmoid) * w0
nll = symgrad.Model(nll_of(f_net), wrt=[w0, W], name="seed001_nll")

p = f_net.applyfunc(sigmoid)
nll_bernoulli = symgrad.Model(
    -Trace(ones_row * (HadamardProduct(y, p.applyfunc(log))
                       + HadamardProduct(OneMatrix(N, 1) - y, p.applyfunc(lambda u: log(1 - u))))),
    wrt=[w0, W], name="seed001_nll_bernoulli")

W1 = MatrixSymbol("W1", h, d)
W2 = MatrixSymbol("W2", h2, h)
w0_deep = MatrixSymbol("w0", h2, 1)
f_deep = ((X * W1.T).applyfunc(sigmoid) * W2.T).applyfunc(sigmoid) * w0_deep
nll_deep = symgrad.Model(nll_of(f_deep), wrt=[w0_deep, W1, W2], name="seed001_nll_deep")

# ---- plain logistic regression on a fixed feature transform Phi (N x k): the lecture's comparison
# of a 3-neuron network with hand-picked feature transforms (x1**2, x2**2 for a circle).
k = sp.Symbol("k", integer=True, positive=True)
Phi = MatrixSymbol("Phi", N, k)
wf = MatrixSymbol("w", k, 1)
# its module also has the dense Hessian: examples/run_second_order.py runs Newton's method on it
logreg_nll = symgrad.Model(nll_of(Phi * wf), wrt=[wf], name="seed001_logreg_nll", derivatives="hessian")
