"""Seed 003 -- "Notes on backpropagation": the three functions the notes differentiate.

* ``seed003_sigmoid_ratio``: f(x, y) = (x + sigmoid(y)) / (sigmoid(x) + (x + y)**2), gradients at
  (2, -4) are (0.5348320870757595, 0.342460382923052) in the notes.
* ``seed003_linear_sq``: f(x, w, y) = (w0 + w1*x - y)**2 at x=3, y=7, w0=-2, w1=2 has
  df/dw0 = -6, df/dw1 = -18 (and df/dx = -12, df/dy = 6).
* ``seed003_quadratic``: f(x, y) = x**2 + y**2 + a*x + b*y with a=400, b=8 (data inputs, as in the
  notes' computational graph); gradient descent from (0, 0) goes to the minimum (-200, -4).

Compile with ``symgrad compile examples/seed003_backprop.py``; ``examples/run_seed003.py`` reproduces
the notes' numbers with the generated modules.
"""
import sympy as sp

import symgrad

x, y = sp.symbols("x y")


def sigmoid(t):
    return 1 / (1 + sp.exp(-t))


sigmoid_ratio = symgrad.Model(
    (x + sigmoid(y)) / (sigmoid(x) + (x + y) ** 2),
    wrt=[x, y],
    name="seed003_sigmoid_ratio",
)

w0, w1 = sp.symbols("w0 w1")
linear_sq = symgrad.Model(
    (w0 + w1 * x - y) ** 2,
    wrt=[w0, w1, x, y],
    name="seed003_linear_sq",
)

a, b = sp.symbols("a b")
quadratic = symgrad.Model(
    x ** 2 + y ** 2 + a * x + b * y,
    wrt=[x, y],
    name="seed003_quadratic",
)
