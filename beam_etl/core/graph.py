"""Walking a graph of named nodes (a plan's steps) one way: what a set of nodes reaches."""

from collections.abc import Callable, Iterable


def reachable(starts: Iterable[str], neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """Return the names in `starts` and every name reached from them by `neighbours`.

    Each name is visited once, so the walk ends on a graph with cycles too; order is not kept.
    """
    found = set(starts)
    queue = list(found)
    while queue:
        for name in neighbours(queue.pop()):
            if name not in found:
                found.add(name)
                queue.append(name)
    return found
