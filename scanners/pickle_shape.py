"""The shape of what a pickle loads to: how deep its containers nest, and how many containers it
becomes when every shared reference is counted again (issue 13).

Both are resource attacks on whatever handles the loaded value, not on the unpickler: a list
nested 300,000 deep loads fine and then blows the C stack of the first recursive walk over it
(repr, deepcopy, comparison, a JSON dump); a "billion laughs" pickle doubles a list through
memo GETs forty times and loads as a 40-node graph that is 2^40 nodes to anything walking it
as a tree. Neither can be judged while the opcodes run: with the memo, a container can be
filled after it was placed inside another, so depth counted at each link goes stale. So the walker
keeps, for each container it builds, the containers put inside it (`link`), and the root value is
measured once at STOP: a depth-first walk over distinct nodes (each once, shared ones memoised),
stopped as soon as the path exceeds the depth limit, expansion counts capped at the limit. Its
cost is one visit per container the pickle built, and a torch tensor record built by the
walker's fast path is a leaf of known size.

`within_limits` says when the walk can be skipped: in a value no container of which was reached
twice (no memo GET or DUP of a container) both depth and expansion are bounded by the opcodes
that built it, so a small pickle of that kind (a legacy torch file is five) needs no walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from scanners.pickle_values import DictV, ListV, Made, Record, SetV

# The values that are containers to the measure, and those that keep the containers put in them.
NODES = frozenset({tuple, ListV, SetV, DictV, Made, Record})
TRACKED = frozenset({ListV, SetV, DictV, Made, Record})
# (own depth, own count) of a leaf: a container holding none; a fast-path tensor record (args,
# persistent id, storage, size, stride, OrderedDict: 4 deep, 7 containers)
_LEAF = (1, 1)
_RECORD = (4, 7)


@dataclass(frozen=True, slots=True)
class Shape:
    """`depth`: containers on the longest path from the root (at most `max_depth` + 1, where the
    walk stopped); `expanded`: containers with shared ones counted each time they are reached
    (at most `max_expanded` + 1); `distinct`: containers measured."""

    depth: int
    expanded: int
    distinct: int


def link(target: object, items: list[object]) -> None:
    """Keep the containers among `items` as put in `target` (a container we track)."""
    if target.__class__ not in TRACKED:
        return
    kids = [item for item in items if item.__class__ in NODES]
    if not kids:
        return
    held: list[object] | None = target.kids  # type: ignore[attr-defined]
    if held is None:
        target.kids = kids  # type: ignore[attr-defined]
    else:
        held.extend(kids)


def within_limits(shared: bool, opcodes: int, max_depth: int, max_expanded: int) -> bool:
    """Whether a value built by `opcodes` opcodes is known to be within both limits without
    measuring it: no container of it was reached twice (not `shared`), so it is a tree, which
    expands to its own containers, and a tree is no deeper and no larger than the opcodes that
    built it (one container and one level per opcode at most; a fast-path record is 4 deep and 7
    containers for 30 opcodes)."""
    return not shared and opcodes <= max_depth and opcodes <= max_expanded


def _parts(value: object) -> tuple[tuple[int, int], Iterable[object]] | None:
    """(own depth and count, the values inside) of a container; None if `value` is none."""
    cls = value.__class__
    if cls is tuple:
        for item in value:  # type: ignore[attr-defined]
            if item.__class__ in NODES:
                return _LEAF, value  # type: ignore[return-value]
        return (_LEAF, ()) if value else None  # most tuples hold scalars: a leaf
    if cls is Made:
        made: Made = value  # type: ignore[assignment]
        if made.kids is None:
            return _LEAF, (made.origin, made.args)
        return _LEAF, (made.origin, made.args, *made.kids)
    if cls is ListV or cls is DictV or cls is SetV:
        return _LEAF, value.kids or ()  # type: ignore[attr-defined]
    if cls is Record:
        return _RECORD, value.kids or ()  # type: ignore[attr-defined]
    return None


def measure(root: object, max_depth: int, max_expanded: int) -> Shape:
    """Measure the value graph under `root`, bounded by its distinct containers and
    `max_depth`. A reference back to a container on the current path (a cycle) adds nothing.

    One flat loop: per container met it tells leaves (most tuples, fast-path records) from
    containers to descend into without a call (a state dict holds tens of thousands)."""
    first = _parts(root)
    if first is None:
        return Shape(0, 0, 0)
    cap = max_expanded + 1
    done: dict[int, tuple[int, int]] = {}
    on_path: set[int] = {id(root)}
    # per open node: the node, its children iterator, [its own depth, depth so far, count so far]
    path: list[tuple[object, Iterator[object], list[int]]] = [
        (root, iter(first[1]), [first[0][0], first[0][0], first[0][1]])
    ]
    while path:
        node, kids, acc = path[-1]
        depth, count = acc[1], acc[2]
        for kid in kids:
            cls = kid.__class__
            if cls not in NODES:
                continue
            known = done.get(id(kid))
            if known is None:
                if cls is Record and kid.kids is None:  # type: ignore[attr-defined]
                    known = done[id(kid)] = _RECORD
                elif id(kid) in on_path:
                    continue
                else:
                    inner = _parts(kid)
                    if inner is None:
                        continue
                    if not inner[1]:
                        known = done[id(kid)] = inner[0]
                    else:
                        acc[1], acc[2] = depth, count
                        if len(path) >= max_depth:
                            return Shape(len(path) + 1, count, len(done))
                        on_path.add(id(kid))
                        own = inner[0]
                        path.append((kid, iter(inner[1]), [own[0], own[0], own[1]]))
                        break
            if known[0] >= depth:
                depth = known[0] + 1
            count += known[1]
            if count > cap:
                count = cap
        else:
            path.pop()
            on_path.discard(id(node))
            done[id(node)] = (depth, count)
            if path:
                parent = path[-1][2]
                if depth >= parent[1]:
                    parent[1] = depth + 1
                parent[2] = min(parent[2] + count, cap)
    depth, expanded = done[id(root)]
    return Shape(depth, expanded, len(done))
