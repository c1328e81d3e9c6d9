"""The controller's decision sequence and its mapping to and from ``auxcell`` genotypes.

Order, as in the authors' controller: the decoder connections first (two pool indices per block,
the pool growing by one per block), then the cell: the first op, and per layer two positions and
two ops. Positions and connections have their own number of choices at each step; ops always 11.

Positions (``searcher.controller.positions``): ``extended`` (default) lets cell layer ``k`` read
any of the ``3k - 1`` features written before it (2, 5, 8 choices), the space the published
designs live in: arch1's first layer reads position 1, the first op's output. ``released`` offers
what the authors' released controller does, ``1 + 3(k - 1)`` (1, 4, 7: nas-segm-pytorch
``src/rl/micro_controllers.py``, ``ctx_fcs``: every feature but the one written last), which
cannot produce arch1. The released choices are a prefix of the extended ones, so a decision means
the same position in both.
"""

from __future__ import annotations

from typing import Any

from segnas.nn.auxcell import NUM_BLOCKS, NUM_CELL_LAYERS, OP_NAMES, layer_positions
from segnas.searchers.auxcell.settings import Positions
from segnas.spaces.auxcell import NUM_ENCODER_MAPS


def choices(positions: Positions = Positions.extended) -> list[int]:
    """Number of choices of each decision, in sampling order (19 decisions); ``positions``:
    ``extended`` or ``released`` (see the module docstring)."""
    fewer = int(positions == Positions.released)
    sizes = [NUM_ENCODER_MAPS + block for block in range(NUM_BLOCKS) for _ in range(2)]
    sizes.append(len(OP_NAMES))
    for layer in range(1, NUM_CELL_LAYERS + 1):
        sizes += [layer_positions(layer) - fewer] * 2 + [len(OP_NAMES)] * 2
    return sizes


def to_arch(actions: list[int], **labels: Any) -> dict[str, Any]:
    """The arch (labels ``cell`` and ``connections`` plus ``labels``) a decision sequence means."""
    actions = [int(a) for a in actions]
    conns = [actions[2 * b : 2 * b + 2] for b in range(NUM_BLOCKS)]
    rest = actions[2 * NUM_BLOCKS :]
    layers = [
        [rest[1 + 4 * i], rest[2 + 4 * i], OP_NAMES[rest[3 + 4 * i]], OP_NAMES[rest[4 + 4 * i]]]
        for i in range(NUM_CELL_LAYERS)
    ]
    return {**labels, "cell": {"first": OP_NAMES[rest[0]], "layers": layers}, "connections": conns}


def from_arch(arch: dict[str, Any]) -> list[int]:
    """The decision sequence of a validated arch (inverse of :func:`to_arch`)."""
    actions = [int(i) for pair in arch["connections"] for i in pair]
    actions.append(OP_NAMES.index(arch["cell"]["first"]))
    for pos_a, pos_b, op_a, op_b in arch["cell"]["layers"]:
        actions += [int(pos_a), int(pos_b), OP_NAMES.index(op_a), OP_NAMES.index(op_b)]
    return actions
