"""Seed 002 -- "Backpropagation" (fast.ai style): the 784-50-1 ReLU MLP with an MSE loss.

    l1 = x @ w1 + b1;  l2 = relu(l1);  out = l2 @ w2 + b2;  loss = mean((out[:, 0] - y)**2)

x is (N x m) = (50000 x 784) in the notes, w1 (m x nh), b1 a (1 x nh) row, w2 (nh x 1),
b2 (1 x 1), y an (N x 1) column.  ReLU is ``applyfunc(lambda t: Max(t, 0))``.

The mean of the squared errors is ``Trace(OneMatrix(1, N) * HadamardPower(diff, 2)) / N``.

* ``seed002_mlp_mse``: gradients for w1, b1, w2, b2 (what training needs);
* ``seed002_mlp_mse_xgrad``: the same loss, also differentiated with respect to the input x -- the
  notes check ``x_train.g`` as well;
* ``seed002_mlp_mse_trace``: the same loss and gradients written ``Trace(diff.T * diff) / N``
  (SymPy pushes the transpose into ``diff``, giving a second, transposed copy of the network).
"""
import sympy as sp
from sympy import HadamardPower, Max, MatrixSymbol, OneMatrix, Trace

import symgrad

N, m, nh = sp.symbols("N m nh", integer=True, positive=True)
x = MatrixSymbol("x", N, m)
w1 = MatrixSymbol("w1", m, nh)
b1 = MatrixSymbol("b1", 1, nh)
w2 = MatrixSymbol("w2", nh, 1)
b2 = MatrixSymbol("b2", 1, 1)
y = MatrixSymbol("y", N, 1)

l1 = x * w1 + OneMatrix(N, 1) * b1
l2 = l1.applyfunc(lambda t: Max(t, 0))
out = l2 * w2 + OneMatrix(N, 1) * b2
diff = out - y
loss = Trace(OneMatrix(1, N) * HadamardPower(diff, 2)) / N

# its module also has Hessian-vector products: examples/run_second_order.py takes Hessian-free steps
mlp_mse = symgrad.Model(loss, wrt=[w1, b1, w2, b2], name="seed002_mlp_mse", derivatives="hvp")
mlp_mse_xgrad = symgrad.Model(loss, wrt=[w1, b1, w2, b2, x], name="seed002_mlp_mse_xgrad")
mlp_mse_trace = symgrad.Model(Trace(diff.T * diff) / N, wrt=[w1, b1, w2, b2, x], name="seed002_mlp_mse_trace")
