"""Buffer reuse: which dead array a new value may be written into (``out=``).

Fresh memory is expensive for large arrays (every 4 KiB page faults on first touch), so a value
whose op can write into an existing array takes the buffer of a value that is dead by then: first
an argument that dies at this op (``np.exp(t1, out=t1)``), else the most recently freed buffer of
the same class.  A class is a static shape (``("s", (N, h))``) or, for dynamic-shape values of
scalar Symbols, the set of inputs the value depends on (same inputs, same broadcast shape).  The
module promotes its inputs to one float type on entry, so every float array of a class has the same
dtype too.

Views keep their base alive: a transpose or a broadcast of ``t1`` is ``t1``'s buffer, used later.
Values that are returned never die.
"""
from __future__ import annotations

from collections import defaultdict

_NEVER = float("inf")


def plan(order, users: dict, view_of: dict, klass: dict, writes_out: set, roots: set, no_alias=frozenset()):
    """``(reuse, scratch)``: ``reuse`` maps node id -> id of the node whose buffer (as last
    written) the node writes into; ``scratch`` holds the ids of nodes that allocate a buffer no
    returned value ever lives in (so the array may be kept between calls and used again).

    ``order``: the nodes in emission order; ``users``: node id -> consumer nodes; ``view_of``:
    node id -> id of the node whose memory it shows; ``klass``: node id -> buffer class (absent:
    not a float array the plan may touch); ``writes_out``: ids of nodes whose op takes ``out=``;
    ``roots``: ids of returned values; ``no_alias``: ids of nodes that may not write into an
    argument's own buffer (an array module whose out= is not overlap-safe for that op).
    """
    pos = {n.id: i for i, n in enumerate(order)}
    base, alive = {}, {}
    for n in order:
        base[n.id] = base.get(view_of[n.id], view_of[n.id]) if n.id in view_of else n.id
        last = _NEVER if n.id in roots else max((pos[u.id] for u in users.get(n.id, ())), default=pos[n.id])
        alive[base[n.id]] = max(alive.get(base[n.id], -1), last)
    dying = defaultdict(list)
    for b, last in alive.items():
        if last != _NEVER:
            dying[last].append(b)

    holder: dict[int, int] = {}  # buffer owner -> the value it holds now
    buffer_of: dict[int, int] = {}  # value -> buffer owner
    free: dict = defaultdict(list)
    out: dict[int, int] = {}
    for i, n in enumerate(order):
        k = klass.get(n.id)
        if n.id in writes_out and k is not None:
            viewed = {base[a.id] for a in n.args if a.id in view_of}
            choice = None
            for a in () if n.id in no_alias else n.args:  # an argument that dies here: exact aliasing is safe for ufuncs
                b = base[a.id]
                if (a.id not in view_of and alive.get(b) == i and b in buffer_of and b not in viewed
                        and klass.get(buffer_of[b]) == k and holder[buffer_of[b]] == b):
                    choice = buffer_of[b]
                    break
            if choice is None and free[k]:
                choice = free[k].pop()
            if choice is not None:
                out[n.id] = holder[choice]
                holder[choice] = n.id
                buffer_of[n.id] = choice
        if n.id not in buffer_of and base[n.id] == n.id and k is not None:
            holder[n.id] = n.id
            buffer_of[n.id] = n.id
        for b in dying.get(i, ()):
            if b in buffer_of and holder[buffer_of[b]] == b:
                free[klass[buffer_of[b]]].append(buffer_of[b])
    escaping = {buffer_of[base[r]] for r in roots if base.get(r) in buffer_of}
    scratch = {b for b in set(buffer_of.values()) if b not in escaping and b in writes_out}
    return out, scratch
