"""The pipeline graph of a run as a picture: a layered layout of the steps, computed in Python.

Pure geometry: the templates draw the SVG from the boxes and curves returned here. Layers run
top to bottom (a node sits one layer below its deepest input); within a layer, nodes are
ordered by the mean position of their inputs, and nodes fed only by dead-letter outputs go to
the right, so that the `error` edges fan out beside the main flow instead of across it.
"""

from dataclasses import dataclass, field
from typing import Any, Final

NODE_WIDTH: Final = 200
NODE_HEIGHT: Final = 74
H_GAP: Final = 56
V_GAP: Final = 58
MARGIN: Final = 24
ERROR_OUTPUT: Final = "error"


@dataclass
class Box:
    """A node of the picture: its step's report and where it is drawn (top-left corner)."""

    step: dict[str, Any]
    layer: int
    x: float = 0.0
    y: float = 0.0

    @property
    def cx(self) -> float:
        return self.x + NODE_WIDTH / 2


@dataclass
class Edge:
    """A curve from one node's output to another node, with the rows that went along it."""

    source: str
    target: str
    output: str
    rows: int | None  # None where the report cannot tell (several routed outputs used)
    path: str
    label_x: float
    label_y: float
    anchor: str = "middle"


@dataclass
class Layout:
    """The whole picture: its size, nodes and edges."""

    width: float
    height: float
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT
    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


def parse_ref(ref: str) -> tuple[str, str]:
    """Return (node, output) of an input reference such as `cast` or `cast.error`."""
    node, _, output = ref.partition(".")
    return node, output or "output"


def edge_rows(steps: list[dict[str, Any]]) -> dict[tuple[str, str, str], int | None]:
    """Return the rows that went along each edge (source, output, target).

    An `error` output carries the source's rejected rows. Another output carries the source's
    `rows_out` when the spec reads only that one of its non-error outputs; otherwise (a router
    read through several named outputs, whose report holds their sum) the target's rows in,
    when that target reads nothing else; else the count is unknown (None).
    """
    by_name = {step["name"]: step for step in steps}
    used: dict[str, set[str]] = {}
    for step in steps:
        for ref in step["inputs"]:
            node, output = parse_ref(ref)
            if output != ERROR_OUTPUT:
                used.setdefault(node, set()).add(output)
    rows: dict[tuple[str, str, str], int | None] = {}
    for step in steps:
        for ref in step["inputs"]:
            node, output = parse_ref(ref)
            source = by_name.get(node)
            count = None
            if source is not None and output == ERROR_OUTPUT:
                count = source["rows_rejected"]
            elif source is not None and len(used[node]) == 1:
                count = source["rows_out"]
            elif len(step["inputs"]) == 1:
                count = step["rows_in"]
            rows[(node, output, step["name"])] = count
    return rows


def _layers(steps: list[dict[str, Any]]) -> dict[str, int]:
    names = {step["name"] for step in steps}
    layer: dict[str, int] = {}
    for step in steps:  # the report lists nodes in build order: inputs come first
        parents = [parse_ref(ref)[0] for ref in step["inputs"]]
        layer[step["name"]] = 1 + max((layer.get(p, 0) for p in parents if p in names), default=-1)
    return layer


def layout(steps: list[dict[str, Any]]) -> Layout:
    """Return the layered picture of `steps` (the run report's steps, in build order)."""
    if not steps:
        return Layout(width=2 * MARGIN, height=2 * MARGIN)
    layer = _layers(steps)
    depth = max(layer.values()) + 1
    rows: list[list[Box]] = [[] for _ in range(depth)]
    boxes: dict[str, Box] = {}
    for step in steps:
        box = Box(step=step, layer=layer[step["name"]])
        boxes[step["name"]] = box
        rows[box.layer].append(box)
    position: dict[str, float] = {}
    for level, members in enumerate(rows):
        if level:
            members.sort(key=lambda box: _order_key(box, position))
        for index, box in enumerate(members):
            position[box.step["name"]] = index - (len(members) - 1) / 2
    widest = max(len(members) for members in rows)
    pitch = NODE_WIDTH + H_GAP
    width = widest * pitch - H_GAP + 2 * MARGIN + 2 * H_GAP  # room for the error fans
    for level, members in enumerate(rows):
        for box in members:
            box.x = width / 2 + position[box.step["name"]] * pitch - NODE_WIDTH / 2
            box.y = MARGIN + level * (NODE_HEIGHT + V_GAP)
    height = MARGIN * 2 + depth * (NODE_HEIGHT + V_GAP) - V_GAP
    counts = edge_rows(steps)
    edges = []
    for step in steps:
        for ref in step["inputs"]:
            node, output = parse_ref(ref)
            if node in boxes:
                count = counts[node, output, step["name"]]
                edges.append(_edge(boxes[node], boxes[step["name"]], output, count))
    return Layout(width=width, height=height, boxes=list(boxes.values()), edges=edges)


def _order_key(box: Box, position: dict[str, float]) -> tuple[int, float]:
    parents = [parse_ref(ref) for ref in box.step["inputs"]]
    only_errors = bool(parents) and all(output == ERROR_OUTPUT for _, output in parents)
    known = [position[node] for node, _ in parents if node in position]
    mean = sum(known) / len(known) if known else 0.0
    return (1 if only_errors else 0, mean)


def _curve(*xy: float) -> str:
    """Return an SVG cubic Bezier path through start, two control points and end."""
    points = [f"{x:.1f},{y:.1f}" for x, y in zip(xy[::2], xy[1::2])]
    return f"M{points[0]} C{' '.join(points[1:])}"


def _edge(source: Box, target: Box, output: str, rows: int | None) -> Edge:
    name, to = source.step["name"], target.step["name"]
    if output == ERROR_OUTPUT:  # leaves the node's right side, labelled beside it
        x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT / 2
        x2, y2 = target.cx + NODE_WIDTH / 4, target.y
        bend = max(40.0, (x2 - x1) / 2)
        path = (
            f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2:.1f},{y2 - 40:.1f} {x2:.1f},{y2:.1f}"
        )
        return Edge(name, to, output, rows, path, x1 + 6, y1 - 6, anchor="start")
    x1, y1 = source.cx, source.y + NODE_HEIGHT
    x2, y2 = target.cx, target.y
    bend = (y2 - y1) / 2
    path = (
        f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"
    )
    return Edge(name, to, output, rows, path, (x1 + x2) / 2 + 6, (y1 + y2) / 2 + 4, anchor="start")
