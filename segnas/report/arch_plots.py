"""Pictures of Auto-DeepLab's architecture parameters: α as a heatmap, β as a trellis with the
decoded path on top. Written as PNG and handed to W&B as images."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def _state_name(state: int) -> str:
    return {0: "H1", 1: "H2"}.get(state, f"B{state - 1}")


def alpha_heatmap(
    alpha_weights: torch.Tensor, edges: list[tuple[int, int]], ops: list[str], path: Path, title: str = ""
) -> Path:
    """softmax(α): one row per edge (``B<block>←<input>``), one column per op."""
    weights = alpha_weights.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(ops), 1.0 + 0.28 * len(edges)))
    image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(ops)), ops, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(edges)), [f"B{b + 1}←{_state_name(s)}" for b, s in edges], fontsize=7)
    ax.set_title(title or "softmax(α)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)


def beta_trellis(beta_weights: torch.Tensor, levels: list[int], path: Path, title: str = "") -> Path:
    """Every transition of the trellis drawn with its normalised β as line width and shade; the
    decoded path in red. x: layer (0 = stem), y: stride."""
    weights = beta_weights.detach().float().cpu()
    layers = weights.shape[0]
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * layers, 3.2))
    for layer in range(layers):
        for level in range(weights.shape[1]):
            for t in range(weights.shape[2]):
                w = float(weights[layer, level, t])
                if w <= 0:
                    continue
                ax.plot(
                    [layer, layer + 1],
                    [level, level + t - 1],
                    color="tab:blue",
                    alpha=0.15 + 0.85 * w,
                    linewidth=0.5 + 4.0 * w,
                    zorder=1,
                )
    route = [0, *levels]
    ax.plot(
        range(len(route)),
        route,
        color="tab:red",
        linewidth=2.0,
        marker="o",
        markersize=4,
        zorder=2,
        label="decoded path (Viterbi)",
    )
    ax.set_yticks(range(4), [str(4 * 2**k) for k in range(4)])
    ax.set_ylabel("stride")
    ax.set_xlabel("layer (0 = stem)")
    ax.set_xticks(range(layers + 1))
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title or "normalised β and decoded path", fontsize=9)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
