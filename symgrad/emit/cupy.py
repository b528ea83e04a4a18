"""The CuPy target: the NumPy module's layout, with elementwise work fused into CUDA kernels.

The generated module has exactly the NumPy module's API; only function bodies differ.
:class:`FusedBody` groups each maximal cluster of elementwise nodes (every ``OPS[op].elementwise``
op: arithmetic, functions, ``where``, comparisons, logic; broadcasts that the consumer does by
itself are seen through) into one ``cp.ElementwiseKernel`` defined at module level, written with
the C table of :mod:`symgrad.emit.cuda`.  A kernel reads each of its inputs once and writes only
the values needed outside it -- forward values the backward pass reuses, masks (as ``bool``, one
byte), cotangents -- so the seed-003 ``value_and_grad`` is one kernel: read x, y; write f, df/dx,
df/dy.  Everything else is printed as by the NumPy target: matmuls stay on cuBLAS through ``@``
(transposed operands are views), reductions are CuPy's ``.sum``/``cp.sum`` (tuned CUB reductions;
a ReductionKernel fusing an elementwise producer is left for later), ``item``, ``trace``...

Clusters: a node joins the clusters of its elementwise arguments unless that would create a cycle
through a non-fused node (a matmul between two parts of a cluster), or -- for static shapes -- its
shape differs from the cluster's (every kernel output gets the kernel's iteration shape).  Values
of scalar Symbols have dynamic shapes: a kernel's output has the broadcast shape of *all* the
kernel's inputs, which is harmless where the consumer broadcasts anyway (elementwise ops,
``_sum_to``); a value whose shape matters (the returned value, a reduction's argument, a static
consumer) is only put in a cluster whose inputs give exactly its own shape (checked to a fixpoint).
Scalars built from dimensions and constants only stay Python numbers (``1.0 / N``).

Types: every kernel binds ``T`` from its arrays.  The shared prologue (``_promote``) moves array
inputs to the device in one floating type (float32 stays float32); ``_device`` then makes the
scalar Symbols' Python numbers 0-d arrays of that type.  Values built only from dimensions and
constants are Python numbers, cast to ``T`` by CuPy when passed; literals are ``(T)0.5``.
Kernel names are deterministic: ``_fwd_k0`` (Python) / ``symgrad_<model>_fwd_k0`` (CUDA, for
profilers).
"""
from __future__ import annotations

import heapq
import re

from ..ops import OPS, is_bool
from .cuda import RESERVED, c_expr, c_literal, c_pow
from .module import Body, _literal
from .text import c_comment
from .targets import TARGETS, Target

_HOST_OPS = {"add", "sub", "mul", "div", "neg", "pow"}  # Python arithmetic on Python numbers

_HELPER_KERNEL_NAME = '''def _kernel_name(kernel):
    """CUDA name of a kernel of this module (shown by profilers)."""
    return "symgrad_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in MODEL) + "_" + kernel
'''

_HELPER_DEVICE = '''def _device(dt, *inputs):
    """Inputs that are Python numbers as 0-d device arrays: a kernel binds its type T from arrays."""
    return tuple(cp.asarray(x, dtype=dt) for x in inputs)
'''

_HELPER_SUM_TO = '''def _sum_to(g, x, value, copy=False):
    """Gradient of the input x from the cotangent g: broadcast g like the value, sum to x's shape."""
    shape, g = x.shape, cp.asarray(g, dtype=x.dtype)
    shapes = [g.shape, getattr(value, "shape", ()), shape]
    ndim = max(len(s) for s in shapes)
    full = tuple(max(dims) if 0 not in dims else 0
                 for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes]))
    if g.shape == shape == full:
        return g.copy() if copy else g
    lead = ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and full[lead + i] != 1)
    g = cp.broadcast_to(g, full)
    return g.sum(axis=axes).reshape(shape) if axes else g.copy()
'''


class _Cluster:
    __slots__ = ("members", "shape", "S", "frozen", "up")

    def __init__(self, node, S, frozen, up):
        self.members, self.shape, self.S, self.frozen, self.up = [node], node.shape, S, frozen, up


class FusedBody(Body):
    """Prints a function body with each elementwise cluster as one ElementwiseKernel call."""

    def emit(self, order, users, final):
        self.final, self.users = final, users
        self.prefix = "vag" if final else "fwd"
        self.definitions["_kernel_name"] = _HELPER_KERNEL_NAME
        self.pos = {n.id: i for i, n in enumerate(order)}
        self._classify(order, users, final)
        self._cluster(order)
        self._convert_inputs(order)
        for unit in self._schedule(order):
            if isinstance(unit, _Cluster):
                self._emit_kernel(unit)
            else:
                self._emit_node(unit)
            for n in self.aliases:  # a broadcast the consumer does by itself has its source's name
                if n.id not in self.names and self.real(n).id in self.names:
                    self.names[n.id] = self.names[self.real(n).id]

    def broadcasts_itself(self, user) -> bool:
        """As for NumPy, but a broadcast under a transpose stays a (view) array: a kernel's output
        takes the broadcast shape of its inputs, so an input seen through its broadcast would give
        the kernel a smaller shape than its value has."""
        return user.op != "transpose" and super().broadcasts_itself(user)

    # -- what each node is ----------------------------------------------------------------------
    def real(self, n):
        """The node ``n`` shows: itself, or the source of a broadcast its consumers do themselves."""
        while n.id in self.alias_of:
            n = self.alias_of[n.id]
        return n

    def _classify(self, order, users, final):
        self.kind, self.alias_of, self.aliases = {}, {}, []
        for n in order:
            if n.id in self.names:
                kind = "input"
            elif n.op in ("const", "dim"):
                kind = "host"
            elif (n.op == "bcast" and n.id not in final and users.get(n.id)
                  and all(OPS[u.op].elementwise for u in users[n.id])):
                self.alias_of[n.id] = n.args[0]
                self.aliases.append(n)
                kind = "alias"
            elif OPS[n.op].elementwise:
                host = n.op in _HOST_OPS and all(self.kind[self.real(a).id] == "host" for a in n.args)
                kind = "host" if host else "fused"
            else:
                kind = "other"
            self.kind[n.id] = kind
        fwd = [n for n in order if n.id in self.forward]
        used_fwd = {a.id for n in fwd for a in n.args}
        self.returned = {n.id for n in fwd if n.id not in used_fwd} | set(final)
        # true source sets: the arrays whose broadcast shape a dynamic value has
        self.S_true = {}
        for n in order:
            k = self.kind[n.id]
            if k == "host":
                self.S_true[n.id] = frozenset()
            elif k == "alias":
                self.S_true[n.id] = self.S_true[self.real(n).id]
            elif k == "fused" and n.shape is None:
                self.S_true[n.id] = frozenset().union(*(self.S_true[a.id] for a in n.args))
            else:
                self.S_true[n.id] = frozenset([n.id])
        self.exact = {n.id for n in order if self.kind[n.id] == "fused" and n.shape is None
                      and (n.id in self.returned or not all(self._tolerant(n, u) for u in users.get(n.id, [])))}

    def _tolerant(self, n, u) -> bool:
        """Does consumer ``u`` still compute the right thing if dynamic ``n`` comes broadcast?"""
        if self.kind[u.id] == "alias":
            return u.shape is None and all(self._tolerant(u, w) for w in self.users.get(u.id, []))
        if self.kind[u.id] in ("fused", "host"):
            return u.shape is None
        return u.op == "sum_to" and u.args[0] is n and u.args[1] is not n and u.args[2] is not n

    # -- clusters -------------------------------------------------------------------------------
    def _cluster(self, order):
        constrained, dynamic_fusion = set(self.exact), True
        for _ in range(len(order) + 2):
            clusters = self._greedy(order, constrained, dynamic_fusion)
            bad = self._inflated(self._schedule(order), constrained)
            if not bad:
                break
            if bad <= constrained:  # no progress: fall back to unfused dynamic values (always exact)
                dynamic_fusion = False
            constrained |= bad
        self.clusters = clusters

    def _greedy(self, order, constrained, dynamic_fusion):
        self.cl, dep, clusters = {}, {}, []

        def find(cid):
            while self.cl_alias.get(cid, cid) != cid:
                cid = self.cl_alias[cid]
            return cid

        def closure(ids):
            seen, stack = set(), [find(c) for c in ids]
            while stack:
                c = stack.pop()
                if c not in seen:
                    seen.add(c)
                    stack.extend(find(u) for u in clusters[c].up)
            return seen

        def mat(a):
            return clusters[find(self.cl[a.id])].S if a.shape is None and a.id in self.cl else self.S_true[a.id]

        self.cl_alias = {}
        for n in order:
            k = self.kind[n.id]
            args = [self.real(a) for a in n.args]
            if k != "fused":
                dep[n.id] = set().union(*[{find(self.cl[a.id])} if a.id in self.cl else dep.get(a.id, set())
                                          for a in args]) if k == "other" else set()
                continue
            cand = []
            for a in args:
                c = find(self.cl[a.id]) if a.id in self.cl else None
                if c is not None and c not in cand and clusters[c].shape == n.shape and (
                        n.shape is not None or dynamic_fusion):
                    cand.append(c)
            outside = set().union(*[dep.get(a.id, set()) for a in args if a.id not in self.cl])
            chosen = []
            for c in cand:
                trial = chosen + [c]
                unchosen = {find(self.cl[a.id]) for a in args if a.id in self.cl} - set(trial)
                ext = closure(outside | unchosen | set().union(*[clusters[t].up for t in trial]))
                if ext & set(trial):
                    continue
                if n.shape is None:
                    S = frozenset().union(*[clusters[t].S for t in trial],
                                          *[mat(a) for a in args if a.id not in self.cl or find(self.cl[a.id]) not in trial])
                    if any(clusters[t].frozen and clusters[t].S != S for t in trial):
                        continue
                    if n.id in constrained and S != self.S_true[n.id]:
                        continue
                chosen = trial
            unchosen = {find(self.cl[a.id]) for a in args if a.id in self.cl} - set(chosen)
            if not chosen:
                S = frozenset().union(*[mat(a) for a in args]) if n.shape is None else None
                clusters.append(_Cluster(n, S, n.id in constrained, outside | unchosen))
                self.cl[n.id] = len(clusters) - 1
                continue
            head = clusters[chosen[0]]
            for c in chosen[1:]:
                head.members += clusters[c].members
                head.up |= clusters[c].up
                head.frozen |= clusters[c].frozen
                self.cl_alias[c] = chosen[0]
            head.members.append(n)
            head.up |= outside | unchosen
            head.frozen |= n.id in constrained
            if n.shape is None:
                head.S = frozenset().union(head.S, *[clusters[c].S for c in chosen], *[mat(a) for a in args])
            self.cl[n.id] = chosen[0]
        result = []
        for i, c in enumerate(clusters):
            if find(i) == i:
                c.members.sort(key=lambda m: self.pos[m.id])
                result.append(c)
        for c in result:
            for m in c.members:
                self.cl[m.id] = c
        return result

    def _inflated(self, units, constrained):
        """Values of dynamic shape whose shape matters but whose kernel would broadcast them."""
        mat = {}  # cluster -> the sources of its iteration shape, in schedule order
        bad = set()
        for c in units:
            if not isinstance(c, _Cluster) or c.shape is not None:
                continue
            ids = {m.id for m in c.members}
            ext = [self.real(a) for m in c.members for a in m.args if self.real(a).id not in ids]
            S = frozenset().union(*[mat.get(self.cl.get(e.id), self.S_true[e.id]) if e.shape is None else
                                    self.S_true[e.id] for e in ext])
            mat[c] = S
            for m in c.members:
                if m.id in constrained and S != self.S_true[m.id]:
                    bad |= {e.id for e in ext if e.id in self.cl and e.shape is None
                            and mat.get(self.cl[e.id]) != self.S_true[e.id]} or {m.id}
        return bad

    def _schedule(self, order):
        """Units (clusters and single nodes) in a dependency order, stable in the original order."""
        return list(self._kahn(order))

    def _kahn(self, order):
        units, unit_of = [], {}
        for n in order:
            if self.kind[n.id] in ("input", "alias"):
                continue
            c = self.cl.get(n.id)
            if c is None:
                unit_of[n.id] = n
                units.append(n)
            else:
                unit_of[n.id] = c
                if c.members[0] is n:
                    units.append(c)
        index = {id(u): i for i, u in enumerate(units)}
        deps = {i: set() for i in range(len(units))}
        for n in order:
            if n.id in unit_of:
                me = index[id(unit_of[n.id])]
                for a in n.args:
                    a = self.real(a)
                    if a.id in unit_of and index[id(unit_of[a.id])] != me:
                        deps[me].add(index[id(unit_of[a.id])])
        waiting = {i: len(d) for i, d in deps.items()}
        dependants = {i: [] for i in deps}
        for i, d in deps.items():
            for j in d:
                dependants[j].append(i)
        ready = [i for i, w in waiting.items() if w == 0]
        heapq.heapify(ready)
        while ready:
            i = heapq.heappop(ready)
            yield units[i]
            for j in dependants[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)

    # -- printing -------------------------------------------------------------------------------
    def _convert_inputs(self, order):
        scalars = [self.names[n.id] for n in order if self.kind[n.id] == "input" and n.shape is None]
        if scalars:
            self.definitions["_device"] = _HELPER_DEVICE
            lhs = ", ".join(scalars) + ("," if len(scalars) == 1 else "")
            self.lines.append(f"{lhs} = _device(_dt, {', '.join(scalars)})")

    def _emit_node(self, n) -> None:
        """One non-fused node, printed as by the NumPy target (no out= buffers: kernels allocate)."""
        if n.id in self.names:
            return
        if n.op == "const":
            self.names[n.id] = _literal(n.attr)
            return
        text = self.expr(n, self.users.get(n.id, []), self.final)
        if text is None:
            return
        self.names[n.id] = self.new_name(n)
        self.assign(n, self.names[n.id], text)

    def expr(self, n, users, final):
        if n.op == "sum_to":
            self.definitions["_sum_to"] = _HELPER_SUM_TO
            g, x, value = (self.names[a.id] for a in n.args)
            copy = ", copy=True" if self.kind[self.real(n.args[0]).id] == "input" else ""
            return f"_sum_to({g}, {x}, {value}{copy})"
        return super().expr(n, users, final)

    def _emit_kernel(self, c: _Cluster) -> None:
        ids = {m.id for m in c.members}
        used_c = set(RESERVED)

        def c_name(want: str, fallback: str) -> str:
            name = want if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", want) else fallback
            while name in used_c:
                name += "_"
            used_c.add(name)
            return name

        params, call_args, local = [], [], {}
        for m in c.members:
            for a in map(self.real, m.args):
                if a.id in ids or a.id in local or a.op == "const":
                    continue
                text = self.names[a.id]
                local[a.id] = c_name(text, f"in{len(params)}")
                params.append(f"{_ctype(a)} {local[a.id]}")
                call_args.append(text)
        if not any(self.kind[self.real(a).id] != "host" for m in c.members for a in m.args if self.real(a).id not in ids):
            # only Python scalars in: one goes as a 0-d array, so that the kernel can bind T
            if call_args:
                call_args[0] = f"{self.m}.asarray({call_args[0]}, dtype=_dt)"
            else:
                params.append(f"T {c_name('zero', 'zero')}")
                call_args.append(f"{self.m}.zeros((), dtype=_dt)")
        body, outputs = [], []
        for k, m in enumerate(c.members):
            local[m.id] = c_name(f"v{k}", f"v{k}")
        for m in c.members:
            args = [local[a.id] if a.op != "const" else c_literal(a.attr) for a in map(self.real, m.args)]
            if m.op == "pow" and self.real(m.args[1]).op == "const":
                text = c_pow(args[0], self.real(m.args[1]).attr, args[1])
            else:
                text = c_expr(m.op, args)
            line = f"{_ctype(m)} {local[m.id]} = {text};"
            comment = _c_comment(self.describe(m.id, 48))
            body.append(line + (f"  // {comment}" if comment and len(line) < 72 else ""))
            outside = any(u.id not in ids for u in self._consumers(m))
            if outside or m.id in self.returned:
                outputs.append(m)
        names = [self.new_name(m) for m in outputs]
        out_c = [c_name(nm, f"out{i}") for i, nm in enumerate(names)]
        body += [f"{oc} = {local[m.id]};" for oc, m in zip(out_c, outputs)]
        kernel = f"_{self.prefix}_k{len([d for d in self.definitions if d.startswith('_' + self.prefix + '_k')])}"
        self.definitions[kernel] = "\n".join([
            f"{kernel} = {self.m}.ElementwiseKernel(",
            f'    "{", ".join(params)}",',
            f'    "{", ".join(f"{_ctype(m)} {oc}" for m, oc in zip(outputs, out_c))}",',
            '    """',
            *("    " + ln for ln in body),
            '    """,',
            f'    _kernel_name("{kernel[1:]}"))', ""])
        line = f"{', '.join(names)} = {kernel}({', '.join(call_args)})"
        comment = self.describe(outputs[0].id, 60)
        self.lines.append(line + (f"  # {comment}" if comment and len(line) < 60 else ""))
        for m, nm in zip(outputs, names):
            self.names[m.id] = nm

    def _consumers(self, n):
        for u in self.users.get(n.id, []):
            if self.kind.get(u.id) == "alias":
                yield from self._consumers(u)
            else:
                yield u


def _ctype(n) -> str:
    return "bool" if is_bool(n) else "T"


def _c_comment(text):
    return c_comment(text) if text else None


# no template differs: what is not fused prints as for NumPy, with ``cp`` for ``np``
TARGETS["cupy"] = Target("cupy", "cupy", "cp", overrides={}, body=FusedBody)
