"""The printing rules every target shares (symgrad/emit/printing.py): exact strings, written by hand."""
from __future__ import annotations

import pytest

from symgrad.emit.printing import literal, product, small_power


@pytest.mark.parametrize("v, kw, want", [
    (2.0, {}, "2.0"), (2.0, {"as_int": True}, "2"), (-1.5, {}, "(-1.5)"), (0.1, {}, "0.1"),
    (float("nan"), {}, "float('nan')"), (float("-inf"), {}, "(-float('inf'))"),
    (2.0, {"cast": "(T)"}, "(T)2"), (-1.5, {"cast": "(T)"}, "(T)(-1.5)"), (0.5, {"cast": "(T)"}, "(T)0.5"),
    (float("nan"), {"cast": "(T)"}, "(T)(0.0 / 0.0)"), (float("-inf"), {"cast": "(T)"}, "(T)(-1.0 / 0.0)"),
    (float("inf"), {"cast": "(T)"}, "(T)(1.0 / 0.0)"),
    (2.0, {"cast": "_T"}, "_T(2)"), (-1.5, {"cast": "_T"}, "_T(-1.5)"),
    (float("-inf"), {"cast": "_T"}, "_T(-float('inf'))"), (2.0**60, {"cast": "_T"}, "_T(1.152921504606847e+18)"),
])
def test_literal(v, kw, want):
    assert literal(v, **kw) == want


def test_small_powers_one_threshold_negative_only_where_asked():
    assert [small_power(e) for e in (1, 4, 5, -4, -5, 0, 2.5, None)] == [1, 4, None, -4, None, None, None, None]
    assert small_power(-2, negative=False) is None and small_power(3.0, negative=False) == 3
    assert product("x", 3, "1.0") == "(x * x * x)"
    assert product("x", -2, "(T)1") == "((T)1 / (x * x))"
