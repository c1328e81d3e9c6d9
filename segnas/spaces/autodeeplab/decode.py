"""Auto-DeepLab's architecture parameters: their shapes, normalisation and decoding.

α has one row per cell edge (block i reads every earlier state: the two cell inputs and blocks
0..i-1) and one column per operation. β[l, k, t] weighs the transition from the node at layer l,
level k (stride 4·2^k; layer 0 is the stem) to layer l+1 at level k + t - 1, so t = 0 goes to the
finer resolution, 1 stays and 2 goes to the coarser one. Eq. 7 of the paper normalises β over the
transitions that *leave* a node and exist: a node on the trellis boundary has two, and its
softmax runs over those two only — no rescaling factor is added.

Cell inputs are numbered as in the authors' released cell: 0 is the previous cell's output (H1),
1 the one before (H2), 2 + b the output of block b.
"""

from __future__ import annotations

import math

import torch

from segnas.nn.cell_ops import PRIMITIVES

#: Strides 4, 8, 16, 32.
NUM_LEVELS = 4
#: Transition t moves from level k to level k + t - 1.
TRANSITIONS = (-1, 0, 1)


def num_edges(blocks: int) -> int:
    return sum(2 + block for block in range(blocks))


def edges(blocks: int) -> list[tuple[int, int]]:
    """(block, input) for every row of α, in row order."""
    return [(block, state) for block in range(blocks) for state in range(2 + block)]


def level_exists(layer: int, level: int) -> bool:
    """Layer 0 is the stem (stride 4); each layer can go one level coarser than the last."""
    return 0 <= level <= min(layer, NUM_LEVELS - 1)


def beta_mask(layers: int) -> torch.Tensor:
    """(layers, 4, 3) booleans: which transitions exist on a trellis of ``layers`` layers."""
    mask = torch.zeros(layers, NUM_LEVELS, len(TRANSITIONS), dtype=torch.bool)
    for layer in range(layers):
        for level in range(NUM_LEVELS):
            if not level_exists(layer, level):
                continue
            for t, step in enumerate(TRANSITIONS):
                mask[layer, level, t] = 0 <= level + step < NUM_LEVELS
    return mask


def normalise_alpha(alpha: torch.Tensor) -> torch.Tensor:
    return torch.softmax(alpha, dim=-1)


def normalise_beta(beta: torch.Tensor) -> torch.Tensor:
    """Eq. 7: a softmax over each existing node's outgoing transitions; 0 where none exists."""
    mask = beta_mask(beta.shape[0]).to(beta.device)
    weights = torch.softmax(beta.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(mask, weights, torch.zeros_like(weights))


def decode_cell(alpha: torch.Tensor, blocks: int) -> list[list[list]]:
    """The discrete cell: per block, the two predecessors whose strongest non-`none` op is the
    strongest, each with that op. ``alpha`` may be raw or normalised (same argmaxes per row, but
    the comparison across rows uses softmax weights, as in DARTS)."""
    weights = normalise_alpha(alpha.detach().float().cpu())
    if weights.shape != (num_edges(blocks), len(PRIMITIVES)):
        raise ValueError(f"alpha has shape {tuple(weights.shape)}, expected ({num_edges(blocks)}, {len(PRIMITIVES)})")
    allowed = [i for i, name in enumerate(PRIMITIVES) if name != "none"]
    cell = []
    row = 0
    for block in range(blocks):
        rows = weights[row : row + 2 + block][:, allowed]
        strength, best = rows.max(dim=1)
        order = sorted(range(2 + block), key=lambda state: (-float(strength[state]), state))[:2]
        cell.append([[PRIMITIVES[allowed[int(best[state])]], state] for state in order])
        row += 2 + block
    return cell


def viterbi(beta_weights: torch.Tensor) -> list[int]:
    """Levels (0..3) of the most probable path through the trellis, one per layer 1..L.

    The path starts at the stem (level 0) and its probability is the product of the normalised
    β of the transitions it takes; works for any number of layers.
    """
    weights = beta_weights.detach().double().cpu()
    log_w = torch.where(weights > 0, weights.clamp_min(1e-300).log(), torch.full_like(weights, -math.inf))
    score = {0: 0.0}
    back: list[dict[int, int]] = []
    for layer in range(weights.shape[0]):
        new_score: dict[int, float] = {}
        pointers: dict[int, int] = {}
        for level, value in sorted(score.items()):
            for t, step in enumerate(TRANSITIONS):
                target = level + step
                candidate = value + float(log_w[layer, level, t])
                if candidate == -math.inf:
                    continue
                if target not in new_score or candidate > new_score[target]:
                    new_score[target], pointers[target] = candidate, level
        score = new_score
        back.append(pointers)
    level = max(sorted(score), key=lambda k: score[k])
    path = [level]
    for pointers in reversed(back[1:]):
        level = pointers[level]
        path.append(level)
    return path[::-1]


def path_strides(levels: list[int]) -> list[int]:
    return [4 * 2**level for level in levels]


def path_levels(strides: list[int]) -> list[int]:
    return [int(math.log2(stride)) - 2 for stride in strides]


def path_log_probability(beta_weights: torch.Tensor, levels: list[int]) -> float:
    """log P(path) under normalised β; -inf for a path the trellis does not allow."""
    total, previous = 0.0, 0
    for layer, level in enumerate(levels):
        step = level - previous
        if step not in TRANSITIONS:
            return -math.inf
        weight = float(beta_weights[layer, previous, step + 1])
        if weight <= 0:
            return -math.inf
        total += math.log(weight)
        previous = level
    return total


def cell_log_strength(alpha_weights: torch.Tensor, cell: list[list[list]]) -> float:
    """Σ log α-weight (normalised) of the (op, input) edges ``cell`` keeps: what
    :func:`decode_cell` maximises (per block, the two inputs with the strongest op each), so the
    decoded cell scores highest and any other cell of the space ranks below it by this."""
    weights = alpha_weights.detach().double().cpu()
    total, first_row = 0.0, 0
    for block, edges_of_block in enumerate(cell):
        for op, state in edges_of_block:
            total += math.log(max(float(weights[first_row + int(state), PRIMITIVES.index(op)]), 1e-300))
        first_row += 2 + block
    return total


def architecture_log_strength(
    alpha: torch.Tensor, beta: torch.Tensor, cell: list[list[list]], strides: list[int]
) -> float:
    """Auto-DeepLab's own score of a discrete architecture under the searched α (raw) and β
    (raw): log P(path | β) + the cell's log α strength; the decoded architecture maximises both
    terms (Viterbi and :func:`decode_cell`). The ranking a search implies over its space."""
    return path_log_probability(normalise_beta(beta), path_levels(strides)) + cell_log_strength(
        normalise_alpha(alpha), cell
    )
