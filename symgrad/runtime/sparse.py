"""Run-time helpers of the sparse derivatives (``sparse_jacobian``, ``sparse_hessian``).

These are real functions, tested here (``tests/test_sparse.py``), and copied by
``inspect.getsource`` into every generated module that has a sparse kind (the module then needs
only NumPy, ``scipy.sparse`` and the standard library).  They use ``np`` (the emitter writes the
module's own NumPy alias) and ``_sparse`` (``scipy.sparse``), and call only each other.

Patterns.  A *pattern* is ``(P, shape)``: ``P`` a boolean CSR matrix with one row per entry of a
node's value (C order, ``shape`` its run-time shape) and one column per variable (the wrt inputs,
each raveled in C order, side by side): ``P[e, j]`` when entry ``e`` can depend on variable ``j``.
The module's pattern program computes one per node of the value's graph, in topological order,
by the ``_sp_*`` rules below, and collects into the list ``H`` the Hessian terms of each nonlinear
op: the pairs of variables its second derivative couples.  The Hessian of ``sum(value)`` is
``sum_e adjoint(e) * J_e^T (d2 op_e) J_e`` over the nodes, so its pattern is within the union of
those terms; linear ops add none, a product of two dependent operands adds only the cross terms.

Colorings.  ``_color_columns`` is a greedy distance-2 coloring (largest-first): columns of one
color share no row, so one directional derivative per color gives every entry.  ``_star_color`` is
a greedy star coloring of a symmetric pattern's adjacency graph (Gebremedhin, Manne, Pothen 2005,
SIAM Review 47(4)): a proper coloring in which no path on four vertices has only two colors.
Each two-colored part is then a union of stars, so every off-diagonal entry ``(i, j)`` is
recovered directly from ``B = H S`` (one Hessian-vector product per color): ``H[i, j] =
B[i, color(j)]`` when ``j`` is the only neighbour of ``i`` with its color (``i`` a leaf or the
edge a star of one edge), else ``B[j, color(i)]`` (then ``i`` is that only neighbour of ``j``).
"""
from __future__ import annotations

import math

import numpy as np
try:  # compiling only copies these functions' text: running them (here, in tests) needs SciPy
    import scipy.sparse as _sparse
except ImportError:  # pragma: no cover - symgrad itself depends on NumPy and SymPy only
    _sparse = None


# -- patterns --------------------------------------------------------------------------------------
def _sp_empty(shape, n):
    """The pattern of data: no entry depends on a variable."""
    return _sparse.csr_matrix((int(np.prod(shape, dtype=np.int64)), n), dtype=bool), tuple(shape)


def _sp_variable(shape, offset, n):
    """The pattern of a wrt input: entry e is variable offset + e."""
    size = int(np.prod(shape, dtype=np.int64))
    P = _sparse.csr_matrix((np.ones(size, bool), np.arange(offset, offset + size), np.arange(size + 1)),
                           shape=(size, n))
    return P, tuple(shape)


def _sp_rows(p, index, shape):
    """Pattern of a value whose entry e is entry index[e] of p's value (a selection, a
    broadcast or a permutation of it), shaped ``shape``; index -1: an entry that is 0 (no row)."""
    index = np.asarray(index, dtype=np.int64).ravel()
    P = p[0]
    if index.size and index.min() < 0:  # select an appended empty row for the zeros
        P = _sparse.vstack([P, _sparse.csr_matrix((1, P.shape[1]), dtype=bool)], format="csr")
        index = np.where(index < 0, P.shape[0] - 1, index)
    return P[index], tuple(shape)


def _sp_broadcast(p, shape):
    """p broadcast to ``shape``: each entry depends on what the entry it repeats depends on."""
    size = int(np.prod(p[1], dtype=np.int64))
    return _sp_rows(p, np.broadcast_to(np.arange(size).reshape(p[1]), shape), shape)


def _sp_union(*ps):
    """Entry-wise union of patterns broadcast together (the pattern of an elementwise op)."""
    shape = np.broadcast_shapes(*[p[1] for p in ps])
    P = None
    for p in ps:
        if p[0].nnz:
            q = p[0] if p[1] == shape else _sp_broadcast(p, shape)[0]
            P = q if P is None else P + q
    return (P if P is not None else _sp_empty(shape, ps[0][0].shape[1])[0]), tuple(shape)


def _sp_square(H, P, Q=None):
    """Add to H the variable pairs that entries couple: rows of P with themselves, or (with Q of
    the same rows) rows of P with rows of Q, both ways."""
    if H is None or not P.nnz or (Q is not None and not Q.nnz):
        return
    if Q is None:
        H.append((P.T @ P).tocsr())
    else:
        C = (P.T @ Q).tocsr()
        H.extend((C, C.T.tocsr()))


def _sp_ew(H, how, *ps):
    """An elementwise op of the patterns ps.  ``how``: "zero" (no derivative: comparisons,
    floor, sign), "linear" (add, sub, neg, where in its branches; piecewise-linear ops such as
    abs, Max and Min, whose second derivative is 0), "mul" (bilinear: cross terms), "div" (linear
    in the numerator), "nonlinear" (every other op: all its arguments' variables couple)."""
    if how == "zero":
        return _sp_empty(np.broadcast_shapes(*[p[1] for p in ps]), ps[0][0].shape[1])
    out = _sp_union(*ps)
    if H is not None and how != "linear":
        full = [_sp_broadcast(p, out[1])[0] if p[0].nnz and p[1] != out[1] else p[0] for p in ps]
        if how == "mul":
            _sp_square(H, full[0], full[1])
        elif how == "div":
            _sp_square(H, full[1])
            _sp_square(H, full[0], full[1])
        else:
            _sp_square(H, out[0])
    return out


def _sp_where(H, c, a, b, known=None):
    """where(c, a, b): linear in the branches; the condition carries no derivative but its shape
    (scalar branches picked by a condition on an array give an array).  ``known``:
    the condition's value when it depends on no input (a Sum over part of an axis, a window):
    each entry then depends on its own branch only."""
    shape = np.broadcast_shapes(c[1], a[1], b[1])
    if not (a[0].nnz or b[0].nnz):
        return _sp_empty(shape, a[0].shape[1])
    if known is None:
        out = _sp_union(a, b)
        return out if out[1] == shape else _sp_broadcast(out, shape)
    pick = np.broadcast_to(np.asarray(known, dtype=bool), shape).ravel()
    full = [_sp_broadcast(p, shape)[0] if p[1] != shape else p[0] for p in (a, b)]
    keep = [_sparse.diags(m.astype(bool), format="csr", dtype=bool) for m in (pick, ~pick)]
    return (keep[0] @ full[0] + keep[1] @ full[1]).tocsr(), tuple(shape)


def _sp_value(op, *args, attr=None):
    """The value of a node that depends on no input (a window's condition), for ``_sp_where``:
    the few ops such a condition is built of."""
    if op == "const":
        return np.asarray(attr)
    if op == "bcast":
        return np.broadcast_to(args[0], attr)
    if op == "shift":
        x = np.asarray(args[0])
        return _sp_pick(x, _sp_shifted(x.shape, *attr)).reshape(x.shape)
    logic = {"ne": np.not_equal, "eq": np.equal, "gt": np.greater, "ge": np.greater_equal, "lt": np.less,
             "le": np.less_equal, "and": np.logical_and, "or": np.logical_or, "not": np.logical_not}
    return logic[op](*args)


def _sp_pick(x, index):
    """x's entries at index (C order), 0 where index is -1."""
    flat = np.append(np.ravel(x), np.zeros(1, dtype=np.asarray(x).dtype))
    index = np.asarray(index, dtype=np.int64)
    return flat[np.where(index < 0, flat.size - 1, index)]


def _sp_shifted(shape, axis, c):
    """For shift(x, axis, c) of x shaped ``shape``: the entry of x each entry is (C order), -1
    past an end (entry p along axis is x's p + c)."""
    ids = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    n = shape[axis]
    p = np.arange(n) + c
    inside = (p >= 0) & (p < n)
    moved = np.take(ids, np.clip(p, 0, max(n - 1, 0)), axis=axis)
    mask = inside.reshape((-1, 1) if axis == 0 else (1, -1))
    return np.where(mask, moved, -1)


def _sp_shift(p, axis, c):
    """shift(x, axis, c): entry p along axis is x's p + c, 0 (no dependence) past an end."""
    return _sp_rows(p, _sp_shifted(p[1], axis, c), p[1])


def _sp_clamp(p, axis, lo, m):
    """clamp(x, axis, lo, m): entry p along axis is x's min(max(p, lo), n - 1 - m) (the op's
    _clamp: a window's argument, its entries outside the window copies of the nearest inside)."""
    ids = np.arange(int(np.prod(p[1], dtype=np.int64))).reshape(p[1])
    n = p[1][axis]
    at = np.arange(n)
    if n - 1 - m >= lo:
        at = np.clip(at, lo, n - 1 - m)
    return _sp_rows(p, np.take(ids, at, axis=axis), p[1])


def _sp_diag(p):
    """DiagMatrix of a column or row v of length k: entry (i, i) is v's i, the rest 0."""
    k = int(np.prod(p[1], dtype=np.int64))
    index = np.full((k, k), -1, dtype=np.int64)
    index[np.arange(k), np.arange(k)] = np.arange(k)
    return _sp_rows(p, index, (k, k))


def _sp_diagonal(p):
    """The diagonal of a square matrix, as a column."""
    k = p[1][0]
    return _sp_rows(p, np.arange(k) * (k + 1), (k, 1))


def _sp_onehot(p, shape, i, j):
    """Zeros of ``shape`` with the 0-d (or one-entry) p at [i, j]."""
    index = np.full(shape, -1, dtype=np.int64)
    index[i, j] = 0
    return _sp_rows(p, index, shape)


def _sp_kron(H, a, b):
    """kron(A, B), B of shape (p, q): entry (i p + k, j q + l) is A[i, j] B[k, l], the two of which
    it depends on (cross terms only, as for a product)."""
    (r, c), (p, q) = a[1], b[1]
    i, k, j, l = (x.ravel() for x in np.meshgrid(np.arange(r), np.arange(p), np.arange(c), np.arange(q),
                                                  indexing="ij"))  # C order of the (r p, c q) value
    shape = (r * p, c * q)
    ea, eb = _sp_rows(a, i * c + j, shape)[0], _sp_rows(b, k * q + l, shape)[0]
    if H is not None and a[0].nnz and b[0].nnz:
        _sp_square(H, ea, eb)
    return (ea + eb).tocsr(), shape


def _sp_solve(H, a, b):
    """solve(A, B): column j of the solution depends on all of A and on column j of B; it is
    nonlinear in A (A's variables couple with each other and with B's), linear in B."""
    (k, _), (_, c) = a[1], b[1]
    used = np.zeros(a[0].shape[1], bool)
    used[a[0].indices] = True
    rowA = _sparse.csr_matrix(used.reshape(1, -1))
    colB = _sp_sum((b[0], b[1]), 0)[0] if b[0].nnz else _sparse.csr_matrix((c, a[0].shape[1]), dtype=bool)
    if H is not None and rowA.nnz:
        _sp_square(H, rowA)
        for j in range(c):  # A with column j of B
            _sp_square(H, rowA, colB[j])
    per_col = (colB + _sparse.csr_matrix(np.ones((c, 1), bool)) @ rowA).tocsr()
    return _sp_rows((per_col, (c,)), np.tile(np.arange(c), k), (k, c))


def _sp_matmul(H, a, b):
    """a @ b: entry (i, j) depends on row i of a and column j of b (the unions of a's rows and of
    b's columns, by kron-built selection matrices, then repeated over the other index); the
    product couples a[i, l] with b[l, j] (cross terms only)."""
    (r, k), (_, c) = a[1], b[1]
    n = a[0].shape[1]
    P = _sparse.csr_matrix((r * c, n), dtype=bool)
    if a[0].nnz:  # row i of a, for each j
        rows = _sparse.kron(_sparse.identity(r, dtype=bool, format="csr"), np.ones((1, k), bool), format="csr") @ a[0]
        P = P + rows.tocsr()[np.repeat(np.arange(r), c)]
    if b[0].nnz:  # column j of b, for each i
        cols = _sparse.kron(np.ones((1, k), bool), _sparse.identity(c, dtype=bool, format="csr"), format="csr") @ b[0]
        P = P + cols.tocsr()[np.tile(np.arange(c), r)]
    if H is not None and a[0].nnz and b[0].nnz:  # one row per (i, j, l): a[i, l] and b[l, j]
        i, j, l = (x.ravel() for x in np.meshgrid(np.arange(r), np.arange(c), np.arange(k), indexing="ij"))
        _sp_square(H, a[0][i * k + l], b[0][l * c + j])
    return P.tocsr(), (r, c)


def _sp_sum(p, axis):
    """A sum over ``axis`` (None: every entry), kept as a 1-long axis as the IR's sums are."""
    if axis is None:
        return _sparse.csr_matrix(np.asarray(p[0].sum(axis=0)) > 0), ()
    shape = tuple(1 if d == axis else s for d, s in enumerate(p[1]))
    size_in, size_out = int(np.prod(p[1], dtype=np.int64)), int(np.prod(shape, dtype=np.int64))
    group = np.broadcast_to(np.arange(size_out).reshape(shape), p[1]).ravel()
    S = _sparse.csr_matrix((np.ones(size_in, bool), (group, np.arange(size_in))), shape=(size_out, size_in))
    return (S @ p[0]).tocsr(), shape


def _sp_reduce(H, p, axis):
    """A nonlinear reduction (logsumexp): a sum whose entries' variables all couple."""
    out = _sp_sum(p, axis)
    _sp_square(H, out[0])
    return out


def _sp_transpose(p):
    r, c = p[1]
    return _sp_rows(p, np.arange(r * c).reshape(r, c).T, (c, r))


def _sp_entry(p, i, j):
    """M[i, j] (a 0-d value), or the one entry of a 1 x 1 matrix (i = j = 0)."""
    return _sp_rows(p, [i * p[1][1] + j], ())


def _sp_slice(p, index):
    """M[index], ``index`` a pair of (start, stop, step) with stop None for a whole axis."""
    sl = tuple(slice(a, b, s) for a, b, s in index)
    size = int(np.prod(p[1], dtype=np.int64))
    picked = np.arange(size).reshape(p[1])[sl]
    return _sp_rows(p, picked, picked.shape)


def _sp_dense(H, shape, nonlinear, *ps):
    """The conservative rule of an op with no rule of its own: every entry of its value depends
    on every variable any argument depends on (never wrong, only less sparse); a nonlinear one
    couples all of them."""
    n = ps[0][0].shape[1] if ps else 0
    used = np.zeros(n, bool)
    for p in ps:
        used[p[0].indices] = True
    size = int(np.prod(shape, dtype=np.int64))
    row = _sparse.csr_matrix(used.reshape(1, -1))
    if nonlinear:
        _sp_square(H, row)
    return _sp_rows((row, (1,)), np.zeros(size, np.int64), shape)


def _sp_hessian(H, n):
    """The symmetric Hessian pattern from the terms in H (an empty one if there are none)."""
    S = _sparse.csr_matrix((n, n), dtype=bool)
    for term in H:
        S = S + term
    S = (S + S.T).tocsr()
    S.sort_indices()
    return S


# -- colorings -------------------------------------------------------------------------------------
def _color_columns(P):
    """A greedy distance-2 coloring of the columns of the boolean CSR matrix P (largest-first):
    ``colors[j]`` such that two columns sharing a row never share a color."""
    P = _sparse.csr_matrix(P, dtype=bool)
    C = P.tocsc()
    rp, ri, cp, ci = P.indptr.tolist(), P.indices.tolist(), C.indptr.tolist(), C.indices.tolist()
    n = P.shape[1]
    work = P.T.astype(np.int64) @ np.diff(P.indptr)  # a column's rows' entries: its neighbours, at most
    order = np.argsort(-work, kind="stable").tolist()
    colors, stamp = [-1] * n, [-1] * (n + 1)
    for j in order:
        for i in ci[cp[j]:cp[j + 1]]:
            for k in ri[rp[i]:rp[i + 1]]:
                c = colors[k]
                if c >= 0:
                    stamp[c] = j
        c = 0
        while stamp[c] == j:
            c += 1
        colors[j] = c
    return np.asarray(colors, dtype=np.int64)


def _star_color(A):
    """A greedy star coloring (largest-first) of the graph whose edges are the off-diagonal
    entries of the symmetric boolean CSR matrix A: a proper coloring in which every path on four
    vertices has at least three colors.  When vertex v is colored, a color is forbidden if it is
    a neighbour's (proper), if it would end a two-colored path v-w-x-y (x has that color and x has
    another neighbour y of w's color), or if it would sit inside one, w-v-x-y (two neighbours w, x
    of v share a color and a neighbour y of x has it)."""
    coo = _sparse.coo_matrix(A, dtype=bool)
    off = coo.row != coo.col
    n = coo.shape[0]
    A = _sparse.csr_matrix((np.ones(int(off.sum()), bool), (coo.row[off], coo.col[off])), shape=(n, n))
    ap, ai = A.indptr.tolist(), A.indices.tolist()
    adj = [ai[ap[v]:ap[v + 1]] for v in range(n)]
    order = np.argsort(-np.diff(A.indptr), kind="stable").tolist()
    colors, stamp = [-1] * n, [-1] * (n + 1)
    count = [{} for _ in range(n)]  # vertex -> {color: its neighbours of that color}
    for v in order:
        mine = count[v]
        for w in adj[v]:
            cw = colors[w]
            if cw < 0:
                continue
            stamp[cw] = v
            for x in adj[w]:  # end of a path v-w-x-y: x's color, if x has another neighbour of w's color
                cx = colors[x]
                if cx >= 0 and count[x].get(cw, 0) >= 2:
                    stamp[cx] = v
            if mine.get(cw, 0) >= 2:  # inside a path w-v-x-y
                for y in adj[w]:
                    cy = colors[y]
                    if cy >= 0:
                        stamp[cy] = v
        c = 0
        while stamp[c] == v:
            c += 1
        colors[v] = c
        for w in adj[v]:
            count[w][c] = count[w].get(c, 0) + 1
    return np.asarray(colors, dtype=np.int64)


def _star_sources(A, colors):
    """For each stored entry (i, j) of the symmetric pattern A (CSR, sorted indices), where its
    value is in B = H S (S: one column per color): ``(rows, cols)`` with ``H[i, j] = B[rows, cols]``,
    the same for (i, j) and (j, i) (see the module docstring)."""
    A = _sparse.csr_matrix(A, dtype=bool)
    k = int(colors.max()) + 1 if colors.size else 1
    coo = A.tocoo()
    i, j = coo.row.astype(np.int64), coo.col.astype(np.int64)
    off = i != j
    # how many neighbours of each vertex have each color, as sorted keys vertex * k + color
    keys = i[off] * k + colors[j[off]]
    keys, counts = np.unique(keys, return_counts=True)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    want = lo * k + colors[hi]
    at = np.minimum(np.searchsorted(keys, want), max(keys.size - 1, 0))
    single = (keys[at] == want) & (counts[at] == 1) if keys.size else np.zeros(i.size, bool)
    rows = np.where(single | ~off, lo, hi)
    cols = np.where(single | ~off, colors[hi], colors[lo])
    return rows, cols  # in A's CSR order: tocoo keeps it


# -- the plans the sparse functions run ---------------------------------------------------------
def _jacobian_plan(P):
    """How to evaluate a Jacobian of pattern P (value entries x variables): ``(P, "columns",
    colors)`` (one jvp per color of the columns) or ``(P, "rows", colors)`` (one vjp per color of
    the rows), the side whose coloring needs fewer colors at least (the most entries in a row,
    resp. a column), so a single row (a gradient) is one vjp."""
    P = _sparse.csr_matrix(P, dtype=bool)
    P.sort_indices()
    by_row = np.diff(P.indptr).max(initial=0)
    by_col = np.diff(P.tocsc().indptr).max(initial=0)
    if by_row <= by_col:
        return P, "columns", _color_columns(P)
    return P, "rows", _color_columns(P.T.tocsr())


def _pattern_is_dense(P):
    return P.shape[0] * P.shape[1] > 1 and P.nnz == P.shape[0] * P.shape[1]


def _hessian_plan(H, n):
    """(A, colors, rows, cols): the symmetric Hessian pattern of the terms H, its star coloring
    and where each stored entry is found (``_star_sources``)."""
    A = _sp_hessian(H, n)
    colors = _star_color(A)
    return (A, colors) + _star_sources(A, colors)


# -- evaluation ------------------------------------------------------------------------------------
def _layout(shapes):
    """(offsets, n): where each wrt input's entries start among the n variables."""
    sizes = [math.prod(s) for s in shapes]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()[:-1], sum(sizes)


def _unflatten(x, names, shapes):
    """{name: array of its shape} from the variables' vector x."""
    out, at = {}, 0
    for name, shape in zip(names, shapes):
        size = math.prod(shape)
        out[name] = x[at:at + size].reshape(shape)
        at += size
    return out


def _flatten(d, names):
    """The variables' vector of the dict d (each by name, raveled in C order)."""
    return np.concatenate([np.ravel(d[name]) for name in names]) if names else np.zeros(0)


def _jacobian_values(P, how, colors, along, dtype):
    """The CSR Jacobian of pattern P from one directional derivative per color:
    ``along("columns", s)`` is J s (s: the columns of a color), ``along("rows", s)`` is s^T J."""
    if not P.nnz:
        return _sparse.csr_matrix(P.shape, dtype=dtype)
    i = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
    j = P.indices
    seeds = [(colors == c).astype(dtype) for c in range(int(colors.max()) + 1)]
    if how == "columns":
        B = np.stack([along("columns", s) for s in seeds], axis=1)
        data = B[i, colors[j]]
    else:
        B = np.stack([along("rows", s) for s in seeds], axis=0)
        data = B[colors[i], j]
    return _with_data(P, data.astype(dtype, copy=False))


def _with_data(P, data):
    """A CSR matrix of P's structure (its own copy) holding data."""
    M = P.copy()
    M.data = data
    return M


def _hessian_values(A, colors, rows, cols, hvp):
    """The CSR Hessian of the symmetric pattern A (star colored) from one Hessian-vector
    product per color: ``hvp(s)`` is H s (A has entries: at least one color)."""
    k = int(colors.max()) + 1
    B = np.stack([hvp((colors == c).astype(np.float64)) for c in range(k)], axis=1)
    return _with_data(A, B.ravel().take(rows * k + cols))
