"""The shape of what a pickle loads to: how deep its containers nest, and how many containers it
becomes when every shared reference is counted again (issue 13).

Both are resource attacks on whatever handles the loaded value, not on the unpickler: a list
nested 300,000 deep loads fine and then blows the C stack of the first recursive walk over it
(repr, deepcopy, comparison, a JSON dump); a "billion laughs" pickle doubles a list through
memo GETs forty times and loads as a 40-node graph that is 2^40 nodes to anything walking it
as a tree. Neither can be judged while the opcodes run: with the memo, a container can be
filled after it was placed inside another, so depth counted at each link goes stale. So the walker
keeps, for each container it builds, the containers put inside it, and the root value is
measured once at STOP: a depth-first walk over distinct nodes (each once, shared ones memoised),
stopped as soon as the path exceeds the depth limit, expansion counts capped at the limit. Its
cost is one visit per container the pickle built, and a torch tensor record built by the
walker's fast path is a leaf of known size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# What a value is to the measure: None (not a container), or (its own depth, its own count of
# containers, the values inside it). A fast-path tensor record is (4, 7, what was added later).
Node = tuple[int, int, Iterable[object]] | None
Children = Callable[[object], Node]


@dataclass(frozen=True, slots=True)
class Shape:
    """`depth`: containers on the longest path from the root (at most `max_depth` + 1, where the
    walk stopped); `expanded`: containers with shared ones counted each time they are reached
    (at most `max_expanded` + 1); `distinct`: containers measured."""

    depth: int
    expanded: int
    distinct: int


def measure(
    root: object, children: Children, kinds: frozenset[type], max_depth: int, max_expanded: int
) -> Shape:
    """Measure the value graph under `root` (`kinds`: the classes `children` may call a
    container); bounded by its distinct containers and `max_depth`. A reference back to a
    container on the current path (a cycle) adds nothing."""
    first = children(root) if root.__class__ in kinds else None
    if first is None:
        return Shape(0, 0, 0)
    cap = max_expanded + 1
    done: dict[int, tuple[int, int]] = {}
    on_path: set[int] = {id(root)}
    # per open node: the node, its children iterator, [its own depth, depth so far, count so far]
    path: list[tuple[object, Iterator[object], list[int]]] = [
        (root, iter(first[2]), [first[0], first[0], first[1]])
    ]
    while path:
        node, kids, acc = path[-1]
        for kid in kids:
            if kid.__class__ not in kinds:
                continue
            known = done.get(id(kid))
            if known is None:
                if id(kid) in on_path:
                    continue
                inner = children(kid)
                if inner is None:
                    continue
                if not inner[2]:  # a leaf: measured at once
                    known = done[id(kid)] = (inner[0], inner[1])
                else:
                    if len(path) >= max_depth:
                        return Shape(len(path) + 1, min(acc[2], cap), len(done))
                    on_path.add(id(kid))
                    path.append((kid, iter(inner[2]), [inner[0], inner[0], inner[1]]))
                    break
            if known[0] >= acc[1]:
                acc[1] = known[0] + 1
            acc[2] = min(acc[2] + known[1], cap)
        else:
            path.pop()
            on_path.discard(id(node))
            done[id(node)] = (acc[1], acc[2])
            if path:
                parent = path[-1][2]
                if acc[1] >= parent[1]:
                    parent[1] = acc[1] + 1
                parent[2] = min(parent[2] + acc[2], cap)
    depth, expanded = done[id(root)]
    return Shape(depth, expanded, len(done))
