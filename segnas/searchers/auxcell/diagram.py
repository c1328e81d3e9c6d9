"""The best cell drawn as a graph: its input, every op (boxes), the layer sums and the output.

Columns follow the cell's feature list (input, first op, then per layer its two ops and their
sum), so the positions of the encoding can be read off the picture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _nodes(arch: dict[str, Any]) -> tuple[list[tuple[str, float, float]], list[tuple[int, int]], list[int]]:
    """(label, x, y) per cell feature, edges between features, and the features summed at the output."""
    cell = arch["cell"]
    nodes = [("x", 0.0, 0.0), (cell["first"], 1.0, 0.0)]
    edges = [(0, 1)]
    outputs = [1]
    for index, (pos_a, pos_b, op_a, op_b) in enumerate(cell["layers"], start=1):
        column = 2.0 * index
        nodes += [(op_a, column, 0.6), (op_b, column, -0.6), ("+", column + 1.0, 0.0)]
        a, b, total = len(nodes) - 3, len(nodes) - 2, len(nodes) - 1
        edges += [(pos_a, a), (pos_b, b), (a, total), (b, total)]
        outputs = [p for p in outputs if p not in (pos_a, pos_b)] + [3 * index + 1]
    return nodes, edges, outputs


def draw_cell(arch: dict[str, Any], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes, edges, outputs = _nodes(arch)
    out_x = max(x for _, x, _ in nodes) + 1.5
    figure, axis = plt.subplots(figsize=(11, 3.2))
    arrow = {"arrowstyle": "->", "color": "0.4", "lw": 0.8, "connectionstyle": "arc3,rad=0.15"}
    for start, end in edges:
        axis.annotate("", xy=nodes[end][1:], xytext=nodes[start][1:], arrowprops=arrow)
    for index in outputs:
        axis.annotate("", xy=(out_x, 0.0), xytext=nodes[index][1:], arrowprops={**arrow, "color": "tab:green"})
    for index, (label, x, y) in enumerate(nodes):
        axis.text(
            x,
            y,
            f"{label}\n[{index}]",
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "white" if label not in ("x", "+") else "0.9", "ec": "0.3"},
        )
    axis.text(
        out_x,
        0.0,
        "out (sum)",
        ha="center",
        va="center",
        fontsize=7,
        bbox={"boxstyle": "round", "fc": "honeydew", "ec": "tab:green"},
    )
    axis.set_xlim(-0.7, out_x + 0.8)
    axis.set_ylim(-1.2, 1.2)
    axis.axis("off")
    axis.set_title(title or f"connections {arch['connections']}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
