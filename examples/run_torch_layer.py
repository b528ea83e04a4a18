"""A PyTorch training loop whose loss head is a generated module (symgrad.to_torch).

    python examples/run_torch_layer.py [--small]

A torch feature layer ``H = tanh(X A + c)`` (``nn.Linear`` + ``tanh``) feeds a logistic head written
in SymPy and compiled by symgrad: ``mean softplus(-(2y - 1) (H w + 1 b))`` with ``wrt=[H, w, b]``.
``symgrad.to_torch`` makes the module a differentiable torch function: ``loss.backward()`` runs the
module's own ``vjp`` for ``H`` (which torch carries on into the linear layer) and for the head's
parameters ``w`` and ``b``, which are ``nn.Parameter``s that ``torch.optim.Adam`` updates with the
layer's.  The first step's gradients are checked against PyTorch's own autograd of the same head
(``F.binary_cross_entropy_with_logits``); the loss must fall and the accuracy on the two-circle
data set (not linearly separable) must reach 95%.
"""
from __future__ import annotations

import numpy as np
import sympy as sp
import torch
from torch.nn import functional as F

import _common
import symgrad

N, h = sp.symbols("N h", integer=True, positive=True)
H, w, b, y = (sp.MatrixSymbol("H", N, h), sp.MatrixSymbol("w", h, 1), sp.MatrixSymbol("b", 1, 1),
              sp.MatrixSymbol("y", N, 1))
margin = sp.HadamardProduct(2 * y - sp.OneMatrix(N, 1), H * w + sp.OneMatrix(N, 1) * b)
head = symgrad.Model(sp.Trace(sp.OneMatrix(1, N) * margin.applyfunc(lambda m: sp.log(1 + sp.exp(-m)))) / N,
                     wrt=[H, w, b], name="logistic_head", derivatives="vjp")


def circles(n, seed=0):
    rng = np.random.default_rng(seed)
    r = np.where(rng.random(n) < 0.5, 1.0, 2.0)
    phi = rng.uniform(0, 2 * np.pi, n)
    X = np.c_[r * np.cos(phi), r * np.sin(phi)] + 0.15 * rng.standard_normal((n, 2))
    return torch.from_numpy(X), torch.from_numpy((r > 1.5).astype(float)[:, None])


def run(small: bool = False, quiet: bool = False):
    rep = _common.Report("PyTorch training loop with a symgrad loss head (symgrad.to_torch)", quiet=quiet)
    torch.manual_seed(0)
    X, Y = circles(400 if small else 4000)
    layer = torch.nn.Linear(2, 16, dtype=torch.float64)
    w_, b_ = (torch.nn.Parameter(0.1 * torch.randn(s, dtype=torch.float64)) for s in ((16, 1), (1, 1)))
    loss_fn = symgrad.to_torch(symgrad.compile(head))
    opt = torch.optim.Adam([*layer.parameters(), w_, b_], lr=0.05)
    steps = 80 if small else 300
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(H=torch.tanh(layer(X)), w=w_, b=b_, y=Y)
        loss.backward()
        if step == 0:       # the same step with PyTorch's own autograd of the same head
            mine = [p.grad.clone() for p in (*layer.parameters(), w_, b_)]
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(torch.tanh(layer(X)) @ w_ + b_, Y).backward()
            theirs = [p.grad for p in (*layer.parameters(), w_, b_)]
            for name, a, c in zip(("A", "c", "w", "b"), mine, theirs):
                rep.compare(f"step 0: d loss / d {name} vs torch autograd", c.numpy(), a.numpy(), rtol=1e-12)
            for p, g in zip((*layer.parameters(), w_, b_), mine):
                p.grad = g
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        acc = float(((torch.tanh(layer(X)) @ w_ + b_ > 0).double() == Y).double().mean())
    rep.check("loss falls", losses[-1] < 0.3 * losses[0], f"{losses[0]:.4f} -> {losses[-1]:.4f} in {steps} Adam steps")
    rep.check("training accuracy >= 95%", acc >= 0.95, f"{acc:.1%}")
    return rep


def main(argv=None) -> int:
    args = _common.argparser(__doc__.splitlines()[0], small=True).parse_args(argv)
    return run(small=args.small).finish()


if __name__ == "__main__":
    raise SystemExit(main())
