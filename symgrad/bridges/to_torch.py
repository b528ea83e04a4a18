"""``symgrad.to_torch(module)``: a generated module as a differentiable PyTorch function (contract 4f).

    f = symgrad.to_torch(module)
    loss = f(W=W, b=b, X=X, Y=Y)       # keyword tensors in, the value as a tensor out
    loss.backward()                    # through the module's own vjp

* Reverse mode runs the module's ``vjp``; for a one-entry value (a loss) whose wrt inputs require
  grad, the forward call runs ``value_and_grad`` and backward scales its gradients (one forward
  and one backward pass per training step, as with the module alone).  Only wrt inputs get gradients; a data input that requires grad gets none.
* Double backward (``create_graph=True``, ``gradgradcheck``) runs the module's ``hvp``, for a
  one-entry value (``hvp`` is the Hessian of ``sum(value)``); third derivatives are refused.
* Forward mode (``torch.autograd.forward_ad``) runs the module's ``jvp``.  ``torch.func`` transforms
  (``vmap``, ``jacrev``, ``jvp``) are not supported: their wrapped tensors have no memory to share.
* A NumPy module takes CPU tensors without a copy (``tensor.detach().numpy()``) and its results
  become tensors without one (``torch.from_numpy``); a CuPy module takes CUDA tensors, through
  DLPack both ways.  Python numbers and NumPy arrays pass through as data.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SymgradError
from . import core


def to_torch(module):
    """A function of the module's inputs as keyword tensors that returns its value as a tensor,
    differentiable by ``torch.autograd`` through the module's own derivatives."""
    owner = f"to_torch({core.model_name(module)})"
    names, wrt = tuple(module.INPUTS), tuple(module.WRT)
    at = {n: i for i, n in enumerate(names)}
    gpu = getattr(module, "TARGET", "numpy") == "cupy"
    xp = __import__("cupy") if gpu else np

    def array(name, a):
        if not isinstance(a, torch.Tensor):
            return a
        a = a.detach()
        if gpu != (a.device.type == "cuda"):
            raise TypeError(f"{owner}: input {name!r} is a tensor on {a.device}, but the "
                            f"{getattr(module, 'TARGET', 'numpy')} module computes on the "
                            f"{'GPU: move it with .cuda()' if gpu else 'CPU: move it with .cpu()'}")
        try:
            return xp.from_dlpack(a) if gpu else a.numpy()
        except RuntimeError as e:     # a torch.func (functorch) wrapper has no storage to share
            raise SymgradError(f"{owner}: input {name!r} cannot be read as an array ({e}): torch.func "
                               f"transforms are not supported, use torch.autograd (and "
                               f"torch.autograd.forward_ad for forward mode)") from None

    def tensor(a):
        if gpu:
            return torch.from_dlpack(xp.asarray(a))
        a = np.asarray(a)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    def save(ctx, args):
        """Tensors through ctx (as autograd wants them), anything else on ctx itself."""
        ctx.kinds = [isinstance(a, torch.Tensor) for a in args]
        ctx.others = [None if k else a for a, k in zip(args, ctx.kinds)]
        tensors = [a for a, k in zip(args, ctx.kinds) if k]
        ctx.save_for_backward(*tensors)
        return tensors

    def restore(ctx):
        saved = iter(ctx.saved_tensors)
        return [next(saved) if k else a for a, k in zip(ctx.others, ctx.kinds)]

    def arrays(args):
        return {n: array(n, a) for n, a in zip(names, args)}

    class Grads(torch.autograd.Function):
        """(cotangent, *inputs) -> the wrt inputs' gradients; its own backward is the hvp."""

        @staticmethod
        def forward(cotangent, *args):
            grads = core.vjp(owner, module, array("cotangent", cotangent), arrays(args))
            return tuple(tensor(grads[w]) for w in wrt)

        @staticmethod
        def setup_context(ctx, inputs, output):
            save(ctx, inputs)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *directions):
            cotangent, *args = restore(ctx)
            hvp = core.need(owner, module, "hvp")
            if cotangent.numel() != 1:
                raise SymgradError(f"{owner}: a second derivative of a value with {cotangent.numel()} "
                                   f"entries: the module's hvp is of sum(value), so only a one-entry "
                                   f"value can be differentiated twice")
            inputs = arrays(args)
            vectors = {w: xp.zeros(np.shape(inputs[w])) if u is None else array(w, u)
                       for w, u in zip(wrt, directions)}
            _, grads, hv = hvp(vectors, **inputs)
            d_cot = sum(float((xp.asarray(grads[w]) * vectors[w]).sum()) for w in wrt)
            out = [torch.full_like(cotangent, d_cot)] + [None] * len(names)
            for w in wrt:
                if ctx.needs_input_grad[1 + at[w]]:
                    out[1 + at[w]] = cotangent.reshape(()) * tensor(hv[w])
            return tuple(out)

    sizes = {}  # the inputs' shapes -> the value's size, learnt at the first call

    class Value(torch.autograd.Function):
        """(with_grads, *inputs) -> value.  with_grads: a wrt tensor requires grad, so for a
        one-entry value forward runs value_and_grad and keeps the gradients -- backward then only
        scales them, and a training step costs one forward and one backward pass, as the module
        alone does.  A value of several entries (known from the first call for these shapes)
        runs forward: its backward is a vjp."""

        @staticmethod
        def forward(ctx, with_grads, *args):
            ctx.save_for_forward(*save(ctx, args))
            inputs, ctx.grads = arrays(args), None
            shapes = tuple(np.shape(a) for a in inputs.values())
            if not with_grads or sizes.get(shapes, 1) != 1:
                value = module.forward(**inputs)
            else:
                value, grads = module.value_and_grad(**inputs)
                if np.size(value) == 1:
                    ctx.grads = [tensor(grads[w]) for w in wrt]
            sizes[shapes] = int(np.size(value))
            return tensor(value)

        @staticmethod
        def backward(ctx, cotangent):
            kept, ctx.grads = ctx.grads, None      # used once: torch may adopt them as .grad
            if kept is not None and not torch.is_grad_enabled():
                c = cotangent.reshape(())
                grads = kept if bool(c == 1) else [c * g for g in kept]
            else:                                  # a vjp (and, under create_graph, its hvp backward)
                grads = Grads.apply(cotangent, *restore(ctx))
            out = [None] * (1 + len(names))
            for w, g in zip(wrt, grads):
                if ctx.needs_input_grad[1 + at[w]]:
                    out[1 + at[w]] = g
            return tuple(out)

        @staticmethod
        def jvp(ctx, _with_grads, *tangents):
            jvp = core.need(owner, module, "jvp")
            args = restore(ctx)
            for n, t in zip(names, tangents):
                if t is not None and n not in wrt and bool((t != 0).any()):
                    raise SymgradError(f"{owner}: a tangent for {n!r}, which is not a wrt input of "
                                       f"{core.model_name(module)} (wrt: {list(wrt)})")
            inputs = arrays(args)
            vectors = {w: xp.zeros(np.shape(inputs[w])) if tangents[at[w]] is None else
                       array(w, tangents[at[w]]) for w in wrt}
            return tensor(jvp(vectors, **inputs)[1])

    def call(**inputs):
        if set(inputs) != set(names):
            raise TypeError(f"{owner}: takes the inputs {list(names)} by keyword, got {sorted(inputs)}")
        with_grads = torch.is_grad_enabled() and any(
            isinstance(inputs[w], torch.Tensor) and inputs[w].requires_grad for w in wrt)
        return Value.apply(with_grads, *(inputs[n] for n in names))

    call.__name__ = call.__qualname__ = core.model_name(module)
    call.__doc__ = f"{core.model_name(module)}({', '.join(names)}) as a differentiable PyTorch function."
    call.module = module
    return call
