"""Sparse derivatives (contract 4e): the runtime helpers, their colorings, and generated modules.

* colorings against brute force on random patterns (Hypothesis): a distance-2 column coloring
  never gives one color to two columns that share a row; a star coloring is proper and has no
  path on four vertices with two colors; recovery from one product per color is exact;
* pattern rules against NumPy's own indexing (slices, transposes, broadcasts, sums);
* random models of tests/test_fuzz.py: ``sparse_jacobian`` == the tape's exact Jacobian and
  ``sparse_hessian`` == central differences of the tape's gradient, entry by entry; each pattern
  holds every entry non-zero at the point; the module's colorings are valid;
* the extended Rosenbrock function: a tridiagonal pattern, 3 colors, and at n = 10^5 no n x n
  array anywhere (peak memory far below the 10 GB of a dense boolean n x n);
* targets without sparse derivatives refuse them (SymgradError, CLI exit 2).
"""
from __future__ import annotations

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sps
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import symgrad
from symgrad import tape
from symgrad.errors import SymgradError
from symgrad.runtime import sparse as R

from test_fuzz import FUZZ_DERIV, compile_numpy, has_exact_tie, matrix_cases, quiet, reference, scalar_cases

SPARSE = ("sparse_jacobian", "sparse_hessian")
PATTERNS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


# -- brute-force oracles -----------------------------------------------------------------------------
def columns_ok(P, colors):
    """No two columns of one color share a row."""
    P = sps.csr_matrix(P)
    for i in range(P.shape[0]):
        cols = P.indices[P.indptr[i]:P.indptr[i + 1]]
        if len(set(colors[cols])) != len(cols):
            return False
    return True


def star_ok(A, colors):
    """Proper, and every path on four vertices has at least three colors."""
    A = sps.csr_matrix(A).tolil()
    n = A.shape[0]
    adj = [set(A.rows[v]) - {v} for v in range(n)]
    if any(colors[v] == colors[w] for v in range(n) for w in adj[v]):
        return False
    for a in range(n):
        for b in adj[a]:
            for c in adj[b] - {a}:
                for d in adj[c] - {a, b}:
                    if len({colors[a], colors[b], colors[c], colors[d]}) == 2:
                        return False
    return True


@st.composite
def patterns(draw, symmetric=False):
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if symmetric:
        cols = rows
    density = draw(st.sampled_from([0.1, 0.25, 0.5, 0.9]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    M = rng.random((rows, cols)) < density
    if symmetric:
        M = M | M.T
    return sps.csr_matrix(M)


# -- colorings ---------------------------------------------------------------------------------------
@PATTERNS
@given(patterns())
def test_column_coloring_is_distance_2(P):
    colors = R._color_columns(P)
    assert columns_ok(P, colors)


@PATTERNS
@given(patterns(symmetric=True))
def test_star_coloring_is_a_star_coloring(A):
    colors = R._star_color(A)
    assert star_ok(A, colors), colors


@PATTERNS
@given(patterns(symmetric=True), st.integers(0, 2 ** 32 - 1))
def test_star_recovery_is_exact(A, seed):
    """B = H S with one column of S per color; every entry read back equals H's."""
    rng = np.random.default_rng(seed)
    A = (A + sps.identity(A.shape[0], dtype=bool, format="csr")).tocsr()
    A.sort_indices()
    Hd = np.where(A.toarray(), rng.standard_normal(A.shape), 0.0)
    Hd = Hd + Hd.T
    colors = R._star_color(A)
    rows, cols = R._star_sources(A, colors)
    H = R._hessian_values(A, colors, rows, cols, lambda s: Hd @ s)
    np.testing.assert_allclose(H.toarray(), Hd, rtol=1e-13, atol=1e-13)


@PATTERNS
@given(patterns(), st.integers(0, 2 ** 32 - 1))
def test_jacobian_recovery_is_exact(P, seed):
    rng = np.random.default_rng(seed)
    Jd = np.where(P.toarray(), rng.standard_normal(P.shape), 0.0)
    P, how, colors = R._jacobian_plan(P)
    side = P if how == "columns" else P.T.tocsr()
    assert columns_ok(side, colors)
    J = R._jacobian_values(P, how, colors, lambda mode, s: Jd @ s if mode == "columns" else s @ Jd, np.float64)
    np.testing.assert_allclose(J.toarray(), Jd, rtol=1e-13, atol=0)


def test_a_tridiagonal_pattern_takes_three_colors():
    n = 50
    A = sps.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1], format="csr").astype(bool)
    assert R._star_color(A).max() + 1 == 3
    assert R._color_columns(A).max() + 1 == 3


# -- pattern rules against NumPy's indexing -------------------------------------------------------------
def _ids(p):
    """For a pattern of single variables: the variable of each entry (-1: none), shaped as the value."""
    P = p[0].tocsr()
    out = np.full(P.shape[0], -1)
    for e in range(P.shape[0]):
        cols = P.indices[P.indptr[e]:P.indptr[e + 1]]
        assert len(cols) <= 1
        out[e] = cols[0] if len(cols) else -1
    return out.reshape(p[1])


@pytest.mark.parametrize("index", [((1, 5, 1), (0, None, 1)), ((0, 4, 1), (0, None, 1)), ((0, 5, 2), (1, 3, 1))])
def test_slice_rule_selects_numpys_entries(index):
    p = R._sp_variable((5, 3), 0, 15)
    sl = tuple(slice(*i) for i in index)
    np.testing.assert_array_equal(_ids(R._sp_slice(p, index)), np.arange(15).reshape(5, 3)[sl])


def test_transpose_broadcast_and_entry_rules():
    p = R._sp_variable((2, 3), 4, 10)
    ids = np.arange(4, 10).reshape(2, 3)
    np.testing.assert_array_equal(_ids(R._sp_transpose(p)), ids.T)
    np.testing.assert_array_equal(_ids(R._sp_broadcast(R._sp_variable((1, 3), 0, 3), (4, 3))),
                                  np.broadcast_to(np.arange(3), (4, 3)))
    assert _ids(R._sp_entry(p, 1, 2)) == ids[1, 2]


def test_sums_and_products_depend_on_what_they_combine():
    p = R._sp_variable((2, 3), 0, 6)
    assert R._sp_sum(p, 0)[0].toarray().tolist() == [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]]
    assert R._sp_sum(p, None)[0].toarray().all()
    H = []
    a, b = R._sp_variable((2, 2), 0, 6), R._sp_variable((2, 1), 4, 6)
    P, shape = R._sp_matmul(H, a, b)  # (a b)_i = a_i0 b_0 + a_i1 b_1
    assert shape == (2, 1)
    assert P.toarray().astype(int).tolist() == [[1, 1, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]]
    Hp = R._sp_hessian(H, 6).toarray()
    assert Hp[0, 4] and Hp[1, 5] and Hp[2, 4] and Hp[3, 5] and not Hp[0, 5] and not Hp[0, 1] and not Hp[4, 4]


# -- generated modules against the tape ------------------------------------------------------------
def _flat(d, names):
    return np.concatenate([np.ravel(np.asarray(d[k], dtype=np.float64)) for k in names] + [np.zeros(0)])


def _stored(M):
    out = np.zeros(M.shape, bool)
    coo = M.tocoo()
    out[coo.row, coo.col] = True
    return out


def check_sparse(case):
    """sparse == tape (exact Jacobian; Hessian by differences of the exact gradient), each
    pattern holds what is non-zero here, the module's colorings are valid."""
    t_value, t_grads = reference(case)
    assume(np.size(t_value) <= 64)
    mod = compile_numpy(case, ",".join(SPARSE))
    model, inputs, names = case.model, case.inputs, [str(w) for w in case.model.wrt]
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, J = mod.sparse_jacobian(**inputs)
        _, grads, H = mod.sparse_hessian(**inputs)
        Jt = tape.dense_jacobian(model, **inputs)[1]
    assert sps.isspmatrix_csr(J) and sps.isspmatrix_csr(H)
    n = sum(np.size(inputs[k]) if k in inputs else 1 for k in names)
    assert J.shape == (np.size(t_value), Jt.shape[1]) and H.shape == (Jt.shape[1],) * 2
    scale = max(1.0, np.abs(Jt).max(initial=0))
    assert np.abs(J.toarray() - Jt).max(initial=0) <= 1e-9 * scale, "sparse_jacobian != the tape's Jacobian"
    assert not (np.abs(Jt) > 1e-12 * scale)[~_stored(J)].any(), "the Jacobian pattern misses a non-zero"
    assert (H != H.T).nnz == 0
    plan = mod._sparsity(inputs, "jacobian")
    assert columns_ok(plan[0] if plan[1] == "columns" else plan[0].T, plan[2])
    A, colors = mod._sparsity(inputs, "hessian")[:2]
    if A.shape[0] <= 20:
        assert star_ok(A, colors)
    if any(type(a) is int for a in inputs.values()) or has_exact_tie(case) or n > 24:
        return
    with quiet():
        x64 = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
        Ht = tape.dense_hessian(model, **x64)[1]
    hscale = max(1.0, np.abs(Ht).max(initial=0))
    assume(np.isfinite(Ht).all() and hscale < 1e6)
    assert np.abs(H.toarray() - Ht).max(initial=0) <= 1e-4 * hscale, "sparse_hessian != differences of the tape"
    assert not (np.abs(Ht) > 1e-5 * hscale)[~_stored(H)].any(), "the Hessian pattern misses a non-zero"


@FUZZ_DERIV
@given(scalar_cases())
def test_scalar_models_sparse_derivatives(case):
    check_sparse(case)


@FUZZ_DERIV
@given(matrix_cases())
def test_matrix_models_sparse_derivatives(case):
    check_sparse(case)


# -- the extended Rosenbrock function --------------------------------------------------------------
def rosenbrock(n):
    """The terms 100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2, x of shape (n, 1): the function is
    their sum, whose Hessian sparse_hessian gives (a [0, 0] of a product with OneMatrix would have
    SymPy write the sum out term by term, for an integer n)."""
    x = sp.MatrixSymbol("x", n, 1)
    a, b = x[1:, :], x[:-1, :]
    r = a - b.applyfunc(lambda t: t ** 2)
    terms = 100 * sp.HadamardProduct(r, r) + (sp.OneMatrix(n - 1, 1) - b).applyfunc(lambda t: t ** 2)
    return symgrad.Model(terms, wrt=[x], name=f"rosenbrock{n}")


def test_rosenbrock_hessian_is_tridiagonal_with_three_colors():
    model = rosenbrock(12)
    mod = symgrad.compile(model, emit=SPARSE)
    x = np.random.default_rng(0).standard_normal((12, 1))
    value, grads, H = mod.sparse_hessian(x=x)
    assert H.nnz == 3 * 12 - 2
    assert mod.sparse_jacobian(x=x)[1].nnz == 2 * 11  # term i: x[i] and x[i + 1]
    info = mod.sparsity_info(x=x)
    assert info["hessian"]["colors"] == 3 and info["jacobian"]["colors"] == 2
    np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, x=x)[1], rtol=1e-6, atol=1e-6)
    report = symgrad.verify.check(model, mod)
    assert report.ok, report.problems


def test_no_dense_intermediate_at_n_1e5():
    """At n = 10^5 a dense n x n boolean would be 10 GB: the peak of the whole call stays O(n)."""
    n = 10 ** 5
    N = sp.Symbol("N", integer=True, positive=True)
    x, y = sp.MatrixSymbol("x", N, 1), sp.MatrixSymbol("y", N, 1)
    f = sp.HadamardProduct(x, y).applyfunc(lambda t: sp.exp(t)) + x.applyfunc(lambda t: t ** 3)
    mod = symgrad.compile(symgrad.Model((sp.OneMatrix(1, N) * f)[0, 0], wrt=[x, y], name="pairs"), emit=SPARSE)
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((n, 1)) * 0.1, "y": rng.standard_normal((n, 1)) * 0.1}
    tracemalloc.start()
    value, grads, H = mod.sparse_hessian(**inputs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert H.shape == (2 * n, 2 * n) and H.nnz == 4 * n  # x_i, y_i couple: 2x2 blocks
    assert peak < 400 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB"
    xi, yi = inputs["x"][:5, 0], inputs["y"][:5, 0]
    np.testing.assert_allclose(H.diagonal()[:5], yi ** 2 * np.exp(xi * yi) + 6 * xi)
    np.testing.assert_allclose(H[0, n], (1 + xi[0] * yi[0]) * np.exp(xi[0] * yi[0]))


def test_a_dense_hessian_pattern_warns():
    x, y = sp.symbols("x y")
    mod = symgrad.compile(symgrad.Model(sp.exp(x * y), wrt=[x, y], name="dense"), emit=SPARSE)
    with pytest.warns(UserWarning, match="the Hessian pattern is dense"):
        mod.sparse_hessian(x=0.3, y=0.2)


def test_generated_module_imports_only_numpy_scipy_sparse_and_the_standard_library():
    source = symgrad.generate(rosenbrock(6), emit=SPARSE)
    imports = sorted({ln for ln in source.splitlines() if ln.startswith(("import ", "from "))})
    assert {"import numpy as np", "import scipy.sparse as _sparse"} <= set(imports) <= {
        "import math", "import numpy as np", "import scipy.sparse as _sparse", "import threading", "import warnings"}
    assert "def _star_color(" in source and "def _pattern_program(" in source


@pytest.mark.parametrize("target", ["cupy", "dask"])
def test_targets_without_sparse_derivatives_refuse_them(target, tmp_path, capsys):
    with pytest.raises(SymgradError, match=f"sparse_hessian cannot be compiled for target {target}"):
        symgrad.generate(rosenbrock(4), target, emit=["sparse_hessian"])
    model = tmp_path / "m.py"
    model.write_text("import sympy as sp\nimport symgrad\nx = sp.Symbol('x')\nmodel = symgrad.Model(x**3)\n")
    from symgrad.cli import main
    assert main(["compile", str(model), "--target", target, "--emit", "sparse_jacobian", "-o",
                 str(tmp_path / "out.py")]) == 2
    assert "sparse_jacobian cannot be compiled for target" in capsys.readouterr().err
    assert not (tmp_path / "out.py").exists()


def _fresh(model, target="numpy"):
    from symgrad.emit import load_source
    return load_source(symgrad.generate(model, target, emit=SPARSE), model.name)


def test_check_catches_a_pattern_without_an_entry():
    """symgrad.verify.check (what --check and --write-test files run): a Hessian pattern that lost
    one off-diagonal pair, and a Jacobian pattern that lost one entry, are reported."""
    model = rosenbrock(6)
    assert symgrad.verify.check(model, _fresh(model)).ok
    mod = _fresh(model)
    plan = mod._hessian_plan

    def without_one(H, n):
        A = plan(H, n)[0].tolil()
        A[2, 3] = A[3, 2] = False
        A = sps.csr_matrix(A)
        colors = mod._star_color(A)
        return (A, colors) + mod._star_sources(A, colors)
    mod._hessian_plan = without_one
    report = symgrad.verify.check(model, mod)
    assert not report.ok and any("sparse_hessian" in p for p in report.problems), report.problems
    mod = _fresh(model)
    jplan = mod._jacobian_plan
    mod._jacobian_plan = lambda P: jplan(sps.csr_matrix(P.toarray() & ~np.eye(*P.shape, dtype=bool)))
    report = symgrad.verify.check(model, mod)
    assert any("sparse_jacobian: the pattern misses" in p for p in report.problems), report.problems


def test_cli_check_and_verbose_report_the_sparse_functions(tmp_path, capsys):
    from symgrad.cli import main
    model = tmp_path / "rosen.py"
    model.write_text("import sympy as sp\nimport symgrad\nx = sp.MatrixSymbol('x', 8, 1)\n"
                     "r = x[1:, :] - x[:-1, :].applyfunc(lambda t: t**2)\n"
                     "model = symgrad.Model(100 * sp.HadamardProduct(r, r), wrt=[x])\n")
    assert main(["compile", str(model), "-o", str(tmp_path / "r.py"), "--emit", "sparse_jacobian,sparse_hessian",
                 "--check", "-v"]) == 0
    out, err = capsys.readouterr()
    assert "sparse_jacobian" in out and "sparse_hessian" in out
    assert "sparsity at x (8, 1): jacobian 7 x 8, 14 stored, 2 colors" in err
    assert "hessian 8 x 8, 22 stored, 3 colors" in err


def test_numba_modules_have_them_through_their_own_jvp_and_hvp():
    pytest.importorskip("numba")
    model = rosenbrock(7)
    report = symgrad.verify.check(model, _fresh(model, "numba"))
    assert report.ok and "sparse_hessian" in report.derivatives, report.problems


def test_every_derivative_kind_is_complete():
    """Each registry entry has an emitted function, a header line and a check against the tape;
    a module asked for every kind has each kind's function and lists them in DERIVATIVES."""
    from symgrad.kinds import KINDS
    for kind in KINDS.values():
        assert kind.function is not None
        if kind.name != "grad":
            assert kind.signature and callable(kind.checker()), kind.name
    source = symgrad.generate(rosenbrock(4), emit=list(KINDS))
    for kind in KINDS.values():
        assert f"\ndef {kind.function_name}(" in source
        assert kind.signature in source


def test_inputs_named_like_the_pattern_programs_own_names():
    """Inputs named H, inputs, hessian, INPUTS, p0, np: the pattern program's locals and
    parameters never take an input's name."""
    H, inputs, hessian, INPUTS, p0, np_ = sp.symbols("H inputs hessian INPUTS p0 np")
    model = symgrad.Model(sp.exp(H * inputs) + hessian ** 3 * INPUTS + sp.sin(p0 * np_), name="names")
    report = symgrad.verify.check(model, _fresh(model))
    assert report.ok and "sparse_hessian" in report.derivatives, report.problems


def test_an_op_without_a_rule_is_dense_dependence_and_named(tmp_path, capsys):
    """inv has no rule of its own: its entries depend on all of X's (never wrong), the block of y
    stays diagonal, sparsity_info and -v name the op."""
    X, y = sp.MatrixSymbol("X", 2, 2), sp.MatrixSymbol("y", 2, 1)
    model = symgrad.Model(sp.Trace(X.I) + (y.T * y)[0, 0], wrt=[X, y], name="inv")
    mod = _fresh(model)
    inputs = {"X": np.array([[2.0, 0.3], [0.1, 1.5]]), "y": np.array([[0.5], [-1.0]])}
    value, grads, H = mod.sparse_hessian(**inputs)
    assert H.nnz == 16 + 2
    np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, **inputs)[1], rtol=1e-6, atol=1e-8)
    assert mod.sparsity_info(**inputs)["hessian"]["dense_rule"] == ("inv",)
    path = tmp_path / "inv.py"
    path.write_text("import sympy as sp\nimport symgrad\nX = sp.MatrixSymbol('X', 2, 2)\n"
                    "model = symgrad.Model(sp.Trace(X.I), wrt=[X])\n")
    from symgrad.cli import main
    assert main(["compile", str(path), "-o", str(tmp_path / "m.py"), "--emit", "sparse_hessian", "-v"]) == 0
    assert "taken as dense dependence (no rule of their own): inv" in capsys.readouterr().err


# -- rules of their own: shift, a window's where, diag, diagonal, onehot, kron, solve --------------
@pytest.mark.parametrize("axis, c", [(0, 1), (0, -1), (0, 2), (1, 1), (1, -2), (0, 5), (1, -3)])
def test_shift_rule_selects_the_shifted_entries(axis, c):
    """Entry p along axis depends on x's p + c, on nothing past an end (by explicit loops)."""
    p = R._sp_variable((4, 3), 0, 12)
    want = np.full((4, 3), -1)
    for r in range(4):
        for q in range(3):
            rr, qq = (r + c, q) if axis == 0 else (r, q + c)
            if 0 <= rr < 4 and 0 <= qq < 3:
                want[r, q] = rr * 3 + qq
    np.testing.assert_array_equal(_ids(R._sp_shift(p, axis, c)), want)


@pytest.mark.parametrize("axis, lo, m", [(0, 0, 1), (0, 1, 1), (1, 1, 0), (0, 2, 2), (0, 3, 3)])
def test_clamp_rule_copies_the_nearest_entry_inside_the_window(axis, lo, m):
    """Entry p along axis depends on x's entry at p clipped into [lo, n - 1 - m] (by explicit
    loops; a window with no entry inside leaves x as it is, as the op's _clamp does)."""
    p = R._sp_variable((5, 4), 0, 20)
    n = (5, 4)[axis]
    want = np.zeros((5, 4), int)
    for r in range(5):
        for q in range(4):
            k = (r, q)[axis]
            k = min(max(k, lo), n - 1 - m) if n - 1 - m >= lo else k
            want[r, q] = (k * 4 + q) if axis == 0 else (r * 4 + k)
    np.testing.assert_array_equal(_ids(R._sp_clamp(p, axis, lo, m)), want)


def test_diag_diagonal_onehot_and_kron_rules_against_numpy():
    v = R._sp_variable((3, 1), 0, 3)
    ids = np.arange(3)
    np.testing.assert_array_equal(_ids(R._sp_diag(v)), np.where(np.eye(3, dtype=bool), ids, -1))
    m = R._sp_variable((3, 3), 0, 9)
    np.testing.assert_array_equal(_ids(R._sp_diagonal(m))[:, 0], np.diagonal(np.arange(9).reshape(3, 3)))
    want = np.full((2, 3), -1)
    want[1, 2] = 4
    np.testing.assert_array_equal(_ids(R._sp_onehot(R._sp_variable((), 4, 5), (2, 3), 1, 2)), want)
    a, b = R._sp_variable((2, 3), 0, 10), R._sp_variable((2, 2), 6, 10)
    H = []
    P, shape = R._sp_kron(H, a, b)
    got = P.toarray()
    ia = np.kron(np.arange(6).reshape(2, 3), np.ones((2, 2), int)).ravel()     # A's entry of each
    ib = np.kron(np.ones((2, 3), int), np.arange(6, 10).reshape(2, 2)).ravel()  # B's entry of each
    want = np.zeros((24, 10), bool)
    want[np.arange(24), ia] = want[np.arange(24), ib] = True
    assert shape == (4, 6) and (got == want).all()
    Hp = R._sp_hessian(H, 10).toarray()
    assert Hp[0, 6] and Hp[5, 9] and not Hp[0, 1] and not Hp[6, 7] and not Hp[0, 0]


def _indexed_rosenbrock():
    i, n = sp.Idx("i"), sp.Symbol("n")
    x = sp.IndexedBase("x")
    return symgrad.Model(sp.Sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2, (i, 0, n - 2)), name="rosen_ix")


def test_indexed_rosenbrock_hessian_is_tridiagonal_with_three_colors_at_every_n():
    """The textbook Sum with x[i + 1]: one module for every n, no op taken as dense, a
    tridiagonal pattern and 3 hvps; the values equal the tape's Hessian."""
    model = _indexed_rosenbrock()
    mod = symgrad.compile(model, emit=SPARSE)
    for n in (4, 7, 12, 2000):
        x = np.random.default_rng(n).uniform(-1.5, 1.5, (n, 1))
        value, grads, H = mod.sparse_hessian(x=x)
        tri = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1
        info = mod.sparsity_info(x=x)["hessian"]
        assert info["colors"] == 3 and info["dense_rule"] == () and H.nnz == 3 * n - 2
        if n <= 12:
            assert (_stored(H) == tri).all()
            np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, x=x)[1], rtol=1e-6, atol=1e-6)
    report = symgrad.verify.check(model, mod)
    assert report.ok, report.problems


def test_a_window_selects_its_branch_entry_by_entry():
    """Sum(exp(x[i]) x[i + 1], (i, 1, n - 2)): the where of the window takes the first entry out,
    so the gradient's pattern has no x[0] (the union of the branches had it).  The window's
    arguments are clamped (entries outside it copy the nearest inside), so the Hessian's pattern
    is exact too: exp(x_i) x_(i+1) for i = 1..4 has 4 diagonal and 8 off-diagonal entries."""
    i, n = sp.Idx("i"), sp.Symbol("n")
    x = sp.IndexedBase("x")
    model = symgrad.Model(sp.Sum(sp.exp(x[i]) * x[i + 1], (i, 1, n - 2)), name="window")
    mod = symgrad.compile(model, emit=SPARSE)
    v = np.random.default_rng(3).uniform(-1, 1, (6, 1))
    _, J = mod.sparse_jacobian(x=v)
    assert _stored(J).tolist() == [[False] + [True] * 5]
    np.testing.assert_allclose(J.toarray(), tape.dense_jacobian(model, x=v)[1], rtol=1e-12, atol=0)
    _, _, H = mod.sparse_hessian(x=v)
    np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, x=v)[1], rtol=1e-6, atol=1e-6)
    exact = np.zeros((6, 6), bool)
    exact[np.arange(1, 5), np.arange(1, 5)] = exact[np.arange(1, 5), np.arange(2, 6)] = True
    exact |= exact.T
    assert (_stored(H) == exact).all()


def test_kron_diag_and_solve_models_against_the_tape():
    """Each pattern is what the op can touch (counted by hand) and the values equal the tape's."""
    A, B = sp.MatrixSymbol("A", 2, 2), sp.MatrixSymbol("B", 2, 3)
    v, M, b = sp.MatrixSymbol("v", 3, 1), sp.MatrixSymbol("M", 3, 3), sp.MatrixSymbol("b", 3, 2)
    rng = np.random.default_rng(7)
    cases = [
        # kron(A, B): each entry one A and one B entry; H couples A with B only (4 x 6 pairs, both ways)
        (symgrad.Model(sp.KroneckerProduct(A, B), wrt=[A, B], name="kron"),
         {"A": rng.standard_normal((2, 2)), "B": rng.standard_normal((2, 3))}, 2 * 24, 2 * 4 * 6),
        # diag(v) exp'd: exp of the diagonal only (zeros elsewhere are exp(0) = 1, no variable)
        (symgrad.Model(sp.DiagMatrix(v).applyfunc(sp.exp), wrt=[v], name="diagexp"),
         {"v": rng.standard_normal((3, 1))}, 3, 3),
        # solve(M, b): column j of the value depends on M and b[:, j]; b's entries never couple
        (symgrad.Model(M.inv() * b, wrt=[M, b], name="solve"),
         {"M": rng.standard_normal((3, 3)) + 4 * np.eye(3), "b": rng.standard_normal((3, 2))},
         6 * (9 + 3), 81 + 2 * 9 * 6),
    ]
    for model, inputs, jnnz, hnnz in cases:
        mod = _fresh(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, J = mod.sparse_jacobian(**inputs)
            _, _, H = mod.sparse_hessian(**inputs)
        assert mod.sparsity_info(**inputs)["hessian"]["dense_rule"] == (), model.name
        assert (J.nnz, H.nnz) == (jnnz, hnnz), (model.name, J.nnz, H.nnz)
        np.testing.assert_allclose(J.toarray(), tape.dense_jacobian(model, **inputs)[1], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(H.toarray(), tape.dense_hessian(model, **inputs)[1], rtol=1e-5, atol=1e-6)


# ops taken as dense dependence on purpose, and why (docs/sparse.md)
DENSE_ON_PURPOSE = {
    "inv": "every entry of a general matrix's inverse depends on every entry",
    "det": "a scalar of every entry",
    "logdet": "a scalar of every entry",
    "unslice": "occurs in derivative graphs only, never in a value's",
    "sum_to": "occurs in derivative graphs only",
    "kron_a": "occurs in derivative graphs only",
    "kron_b": "occurs in derivative graphs only",
}


def test_every_op_has_a_sparsity_rule_or_is_dense_on_purpose():
    """A new op without a rule would silently make patterns dense (as clamp did): it needs a rule in
    emit/sparsity.py, or a line above saying why the dense rule is right for it."""
    from symgrad.emit.sparsity import _RULES
    from symgrad.ops import OPS
    missing = {name for name, op in OPS.items()
               if name not in _RULES and not op.elementwise and name not in ("input", "where")}
    assert missing <= set(DENSE_ON_PURPOSE), sorted(missing - set(DENSE_ON_PURPOSE))
