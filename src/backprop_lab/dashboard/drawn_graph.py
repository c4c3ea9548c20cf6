"""The computational graph of one sample drawn with its numbers, as micrograd's ``draw_dot``
draws its expressions: every node a box with its name, its forward value and its gradient
d(loss)/d(node), every edge labelled with its local derivative, from the inputs (left) to the
loss (right). Matplotlib only, no graphviz.

    computational_graph   the figure, from the numbers of ``explain.graph_data`` (plain lists,
                          dicts, strings and floats, so render.py can keep them as data)

The layout is a layered one (Sugiyama's): each node one column left of its leftmost consumer,
the order in each column chosen against crossings (barycenters), an edge that skips columns
routed through the free space between their boxes, and every edge's label slid along its edge to
a place where it covers no box and no other label. Where none is free the figure grows and is
laid out again, so the biggest model here (the 2-2-2 net with its biases) stays readable.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
NODE_FONT, LABEL_FONT, TITLE_FONT = 9, 8, 10
PAD = 6  # pixels between a box's text and its border
MARGIN = 24  # pixels around the drawing
TOP, BOTTOM = 58, 34  # the title's band and the legend's

#: Box colours (face, border) by kind of node.
STYLE = {
    "input": ("#dbeafe", "#2563eb"),
    "parameter": ("#ffedd5", "#ea580c"),
    "fixed": ("#f3f4f6", "#6b7280"),
    "node": ("#ffffff", "#374151"),
    "target": ("#dcfce7", "#16a34a"),
    "loss": ("#fee2e2", "#dc2626"),
}
KINDS = {
    "input": "input",
    "parameter": "parameter",
    "fixed": "fixed parameter",
    "node": "intermediate node",
    "target": "target",
    "loss": "loss",
}
_SUPERSCRIPTS = {"^2": "\u00b2", "^3": "\u00b3"}


def computational_graph(graph: Mapping[str, Any]) -> Figure:
    """The figure of ``graph``: {"model", "step", "row", "rows", "objective", "loss", "nodes":
    [{"name", "kind", "value", "grad", "total"?}], "edges": [{"of", "by", "symbol", "value"}]}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, Patch

    layout = Layout(graph)
    fig = Figure(figsize=(layout.width / DPI, layout.height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, layout.width)
    ax.set_ylim(0, layout.height)
    ax.axis("off")

    for edge in layout.edges:
        xs, ys = zip(*edge.points, strict=True)
        ax.plot(xs[:-1], ys[:-1], color="#9ca3af", lw=1.0, zorder=1, solid_capstyle="butt")
        ax.annotate(
            "",
            xy=edge.points[-1],
            xytext=edge.points[-2],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#9ca3af",
                "lw": 1.0,
                "shrinkA": 0,
                "shrinkB": 0,
            },
            zorder=1,
        )
        x, y = edge.label_at
        ax.text(
            x,
            y,
            edge.label,
            fontsize=LABEL_FONT,
            ha="center",
            va="center",
            color="#1f2937",
            zorder=3,
            bbox={
                "boxstyle": "round,pad=0.15",
                "facecolor": "white",
                "edgecolor": "#d1d5db",
                "lw": 0.6,
                "alpha": 0.95,
            },
        )
    for box in layout.boxes.values():
        face, border = STYLE.get(box.kind, STYLE["node"])
        ax.add_patch(
            FancyBboxPatch(
                (box.x0, box.y0),
                box.w,
                box.h,
                boxstyle="round,pad=0,rounding_size=5",
                facecolor=face,
                edgecolor=border,
                lw=1.2,
                zorder=2,
            )
        )
        ax.text(
            box.x0 + box.w / 2,
            box.y0 + box.h - PAD,
            box.title,
            fontsize=NODE_FONT,
            fontweight="bold",
            ha="center",
            va="top",
            zorder=4,
        )
        ax.text(
            box.x0 + box.w / 2,
            box.y0 + PAD,
            box.body,
            fontsize=NODE_FONT,
            ha="center",
            va="bottom",
            zorder=4,
            linespacing=1.25,
        )

    ax.text(
        MARGIN,
        layout.height - 14,
        layout.title,
        fontsize=TITLE_FONT,
        ha="left",
        va="top",
        linespacing=1.4,
    )
    kinds = list(dict.fromkeys(box.kind for box in layout.boxes.values()))
    handles = [
        Patch(facecolor=STYLE[k][0], edgecolor=STYLE[k][1], label=KINDS[k])
        for k in KINDS
        if k in kinds
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncols=len(handles),
        frameon=False,
        fontsize=LABEL_FONT,
        bbox_to_anchor=(0.5, 0.0),
        handlelength=1.4,
    )
    return fig


# --- layout ---------------------------------------------------------------------------------------
@dataclass
class Box:
    name: str
    kind: str
    title: str
    body: str
    w: float = 0.0
    h: float = 0.0
    x0: float = 0.0
    y0: float = 0.0

    def bounds(self, grow: float = 0.0) -> tuple[float, float, float, float]:
        return (self.x0 - grow, self.y0 - grow, self.x0 + self.w + grow, self.y0 + self.h + grow)


@dataclass
class DrawnEdge:
    by: str
    of: str
    label: str
    size: tuple[float, float] = (0.0, 0.0)  # the label's width and height, pixels
    points: list[tuple[float, float]] = field(default_factory=list)
    label_at: tuple[float, float] = (0.0, 0.0)
    gap: int = 0  # the gap between columns (c, c + 1) that holds the label


class Layout:
    """Where every box, edge and label of ``graph`` goes, in pixels (y up)."""

    def __init__(self, graph: Mapping[str, Any]) -> None:
        self.title = _title(graph)
        nodes = {n["name"]: n for n in graph["nodes"]}
        self.boxes = {name: _box(node, graph) for name, node in nodes.items()}
        self.edges = [
            DrawnEdge(e["by"], e["of"], f"{_pretty(e['symbol'])} = {_num(e['value'])}")
            for e in graph["edges"]
            if e["by"] in nodes and e["of"] in nodes and e["by"] != e["of"]
        ]
        self._measure()
        self.columns = self._columns()
        self._order()
        # Grow until every label finds a free place (the first try fits the project's models).
        vgap, spread = 26.0, 1.5
        for _ in range(6):
            if self._place(vgap, spread):
                return
            vgap, spread = vgap * 1.35, spread * 1.15

    # --- sizes --------------------------------------------------------------------------------
    def _measure(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        scratch = Figure(dpi=DPI)
        renderer = FigureCanvasAgg(scratch).get_renderer()

        def size(text: str, fontsize: float, **kw: Any) -> tuple[float, float]:
            artist = scratch.text(0, 0, text, fontsize=fontsize, **kw)
            extent = artist.get_window_extent(renderer)
            artist.remove()
            return extent.width, extent.height

        for box in self.boxes.values():
            tw, th = size(box.title, NODE_FONT, fontweight="bold")
            bw, bh = size(box.body, NODE_FONT, linespacing=1.25)
            box.w, box.h = max(tw, bw) + 2 * PAD, th + bh + 3 * PAD
        for edge in self.edges:
            w, h = size(edge.label, LABEL_FONT)
            edge.size = (w + 6, h + 5)  # with the label's own padding and border
        self.title_width = size(self.title, TITLE_FONT, linespacing=1.4)[0]

    # --- columns and order ----------------------------------------------------------------------
    def _columns(self) -> list[list[str]]:
        """Each node one column left of its leftmost consumer, the loss in the last column."""
        self.consumers: dict[str, list[str]] = {name: [] for name in self.boxes}
        self.producers: dict[str, list[str]] = {name: [] for name in self.boxes}
        for edge in self.edges:
            self.consumers[edge.by].append(edge.of)
            self.producers[edge.of].append(edge.by)
        depth: dict[str, int] = {}

        def from_the_loss(name: str, path: frozenset[str] = frozenset()) -> int:
            if name not in depth:
                if name in path:
                    raise ValueError(f"the graph has a cycle through {name!r}")
                ahead = [from_the_loss(c, path | {name}) for c in self.consumers[name]]
                depth[name] = 1 + max(ahead) if ahead else 0
            return depth[name]

        last = max(from_the_loss(name) for name in self.boxes)
        self.column_of = {name: last - depth[name] for name in self.boxes}
        columns: list[list[str]] = [[] for _ in range(last + 1)]
        for name in self.boxes:
            columns[self.column_of[name]].append(name)
        return columns

    def _order(self) -> None:
        """Barycenter sweeps, right to left and back: each column sorted by the mean position of
        its consumers (or producers); the order with the fewest crossings is kept. A parameter's
        edge into a loss term (ds/dw of the L2 term) counts only where it has no other: the
        model's own edges decide where a parameter sits."""
        ahead = {
            n: [c for c in cs if not self._secondary(n, c)] or cs
            for n, cs in self.consumers.items()
        }

        def positions() -> dict[str, float]:
            return {n: (i + 0.5) / len(col) for col in self.columns for i, n in enumerate(col)}

        def sweep(indices: Sequence[int], neighbours: dict[str, list[str]]) -> None:
            for c in indices:
                pos = positions()
                key = {
                    n: sum(pos[m] for m in neighbours[n]) / len(neighbours[n])
                    if neighbours[n]
                    else pos[n]
                    for n in self.columns[c]
                }
                self.columns[c].sort(key=lambda n: key[n])

        def crossings() -> int:
            pos = positions()
            spans = [
                (self.column_of[e.by], self.column_of[e.of], pos[e.by], pos[e.of])
                for e in self.edges
            ]
            return sum(
                (a[2] - b[2]) * (a[3] - b[3]) < 0
                for a, b in itertools.combinations(spans, 2)
                if a[:2] == b[:2]
            )

        best = (crossings(), [list(col) for col in self.columns])
        rightwards = range(1, len(self.columns))
        leftwards = range(len(self.columns) - 2, -1, -1)
        for _ in range(4):
            for sweeps in ([leftwards], [rightwards, leftwards]):
                for indices in sweeps:
                    sweep(indices, ahead if indices is leftwards else self.producers)
                count = crossings()
                if count <= best[0]:  # a tie goes to the sweeps' order
                    best = (count, [list(col) for col in self.columns])
        self.columns = best[1]

    def _secondary(self, by: str, of: str) -> bool:
        return self.boxes[of].kind == "loss" and self.boxes[by].kind != "loss"

    # --- coordinates and labels -----------------------------------------------------------------
    def _place(self, vgap: float, spread: float) -> bool:
        """Boxes, edges and labels at a row gap of ``vgap`` and gaps between columns ``spread``
        times their widest label; whether every label found a free place."""
        gaps = len(self.columns) - 1
        # Each label sits in one gap its edge crosses: the one that holds the fewest so far.
        load = [0] * max(gaps, 1)
        for edge in sorted(self.edges, key=lambda e: self.column_of[e.of] - self.column_of[e.by]):
            options = range(self.column_of[edge.by], self.column_of[edge.of])
            edge.gap = min(options, key=lambda g: (load[g], -g))
            load[edge.gap] += 1
        widest = [0.0] * max(gaps, 1)
        for edge in self.edges:
            widest[edge.gap] = max(widest[edge.gap], edge.size[0])
        col_width = [max(self.boxes[n].w for n in col) for col in self.columns]
        row = max(box.h for box in self.boxes.values()) + vgap
        label_h = max((e.size[1] for e in self.edges), default=0.0)
        # Room for every node of the fullest column, and for every label of the fullest gap.
        content_h = max(
            max(len(col) for col in self.columns) * row,
            max(load) * (label_h + 4) * spread / 1.5,
        )
        xs: list[float] = []
        x = float(MARGIN)
        for c, width in enumerate(col_width):
            xs.append(x + width / 2)
            x += width + (spread * widest[c] + 24 if c < gaps else 0)
        self.width = max(x + MARGIN, self.title_width + 2 * MARGIN, 480)
        self.height = content_h + TOP + BOTTOM
        shift = (self.width - (x + MARGIN)) / 2  # centre the drawing under a wider title
        for c, col in enumerate(self.columns):
            step = content_h / len(col)
            for i, name in enumerate(col):
                box = self.boxes[name]
                box.x0 = xs[c] + shift - box.w / 2
                box.y0 = BOTTOM + content_h - (i + 0.5) * step - box.h / 2
        for edge in self.edges:
            edge.points = self._route(edge)
        # The gaps' spans in x: a label stays inside the gap that was widened for it.
        rights = [max(self.boxes[n].x0 + self.boxes[n].w for n in col) for col in self.columns]
        lefts = [min(self.boxes[n].x0 for n in col) for col in self.columns]
        spans = [(rights[g], lefts[g + 1]) for g in range(gaps)]
        return self._labels(spans)

    def _route(self, edge: DrawnEdge) -> list[tuple[float, float]]:
        """From the right side of ``by``'s box to the left side of ``of``'s: straight, or where
        that would cross a box, through the free space nearest the line in each column between."""
        a, b = self.boxes[edge.by], self.boxes[edge.of]
        start, end = (a.x0 + a.w, a.y0 + a.h / 2), (b.x0, b.y0 + b.h / 2)
        first, last = self.column_of[edge.by], self.column_of[edge.of]
        between = [self.boxes[n] for c in range(first + 1, last) for n in self.columns[c]]
        if not any(_crosses((start, end), box.bounds(grow=4)) for box in between):
            return [start, end]
        points = [start]
        for c in range(first + 1, last):
            column = sorted((self.boxes[n] for n in self.columns[c]), key=lambda box: box.y0)
            x0 = min(box.x0 for box in column) - 8
            x1 = max(box.x0 + box.w for box in column) + 8
            ideal = _y_at([points[-1], end], (x0 + x1) / 2)
            edges_y = [box.y0 for box in column] + [box.y0 + box.h for box in column]
            free = [
                (column[i].y0 + column[i].h + column[i + 1].y0) / 2 for i in range(len(column) - 1)
            ]
            free += [min(edges_y) - 14, max(edges_y) + 14]
            inside = any(box.y0 - 6 < ideal < box.y0 + box.h + 6 for box in column)
            y = min(free, key=lambda f: abs(f - ideal)) if inside else ideal
            points += [(x0, y), (x1, y)]
        return [*points, end]

    def _labels(self, spans: Sequence[tuple[float, float]]) -> bool:
        """Each label slid along its edge, inside its gap, to the spot nearest the gap's middle
        where it covers no box and no label placed before it; False if some label found none."""
        taken = [box.bounds(grow=3) for box in self.boxes.values()]
        steps = [0.5 + d for k in range(11) for d in ((k * 0.04, -k * 0.04) if k else (0.0,))]
        everyone_fits = True
        for edge in sorted(self.edges, key=lambda e: -e.size[0]):  # the widest first
            x0, x1 = spans[edge.gap]
            w, h = edge.size
            best, best_cost = (0.0, 0.0), float("inf")
            for t in steps:
                cx = x0 + t * (x1 - x0)
                cy = _y_at(edge.points, cx)
                rect = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                cost = sum(_overlap(rect, other) for other in taken)
                if cost < best_cost:
                    best, best_cost = (cx, cy), cost
                if cost == 0:
                    break
            edge.label_at = best
            cx, cy = best
            taken.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            everyone_fits &= best_cost == 0
        return everyone_fits


def _y_at(points: Sequence[tuple[float, float]], x: float) -> float:
    """The polyline's y at ``x`` (its points run left to right)."""
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        if x1 <= x <= x2:
            return y1 if x2 == x1 else y1 + (x - x1) / (x2 - x1) * (y2 - y1)
    return points[0][1] if x < points[0][0] else points[-1][1]


def _crosses(segment: Sequence[tuple[float, float]], box: tuple[float, ...]) -> bool:
    """Whether the segment passes through the box (sampled finely: boxes are larger than the
    step)."""
    (x1, y1), (x2, y2) = segment
    for k in range(1, 200):
        x, y = x1 + k / 200 * (x2 - x1), y1 + k / 200 * (y2 - y1)
        if box[0] < x < box[2] and box[1] < y < box[3]:
            return True
    return False


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    dx = min(a[2], b[2]) - max(a[0], b[0])
    dy = min(a[3], b[3]) - max(a[1], b[1])
    return dx * dy if dx > 0 and dy > 0 else 0.0


# --- text ---------------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def _pretty(text: str) -> str:
    for plain, superscript in _SUPERSCRIPTS.items():
        text = text.replace(plain, superscript)
    return text


def _box(node: Mapping[str, Any], graph: Mapping[str, Any]) -> Box:
    kind = str(node["kind"])
    lines = [f"value {_num(node['value'])}", f"grad {_num(node['grad'])}"]
    if node.get("total") is not None and graph["rows"] > 1:
        lines[1] += " (this row)"
        lines.append(f"batch {node['total']:.6g}")
    title = _pretty(str(node["name"]))
    if kind == "fixed":
        title += " (fixed)"
    elif kind == "loss" and node["name"] == "L":
        title += f" ({graph['loss'].split(' + l2')[0]})"
    return Box(str(node["name"]), kind, title, "\n".join(lines))


def _title(graph: Mapping[str, Any]) -> str:
    objective, rows = graph["objective"], graph["rows"]
    sample = f"row {graph['row'] + 1} of {rows}" if rows > 1 else "one row"
    first = (
        f"{graph['model']} at step {graph['step']} (after {graph['step']} updates): the "
        f"computational graph of {sample}, {objective} = {graph['loss']}"
    )
    second = (
        f"each box: the node's value and grad = d{objective}/d(node); each edge: the local "
        "derivative d(head)/d(tail)"
    )
    if rows > 1:
        second += (
            f"; a parameter's grad from this row, and over the batch ({objective} is the batch's)"
        )
    return f"{first}\n{second}"
