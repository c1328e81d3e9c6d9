"""The Fast Dense NAS space (Nekrasov et al., CVPR 2019): a searched decoder over a timm encoder.

Labels: ``backbone`` (timm name, read at strides 4/8/16/32), ``cell`` (``first`` op and three
``layers`` of ``[position_a, position_b, op_a, op_b]``, op names from
:data:`segnas.nn.auxcell.OP_NAMES`), ``connections`` (three ``[input_a, input_b]`` pool indices),
``width`` (decoder channels) and ``sep_repeats`` (separable conv repeats). ``width`` and
``sep_repeats`` default to the final models' 64 and 2; the search trains its children at 48 and
1 and hands back genotypes with the final values, which is what the pipeline retrains.

The authors' encoding ``[[op0, [p1, p2, o1, o2] × 3], [[i1, i2] × 3]]`` (integer op ids) is an
import format: an arch ``{"encoding": ...}`` (plus any other label) validates to the labels
above, and :func:`to_encoding` writes it back. Auxiliary heads are a build option
(``aux_heads``), off by default, so a built or exported network never contains them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from segnas.errors import ConfigError, GenotypeError
from segnas.genotype import Genotype
from segnas.nn import build_backbone, unknown_backbone_message
from segnas.nn.auxcell import (
    NUM_BLOCKS,
    NUM_CELL_LAYERS,
    OP_NAMES,
    AuxCellDecoder,
    AuxCellNet,
    layer_positions,
)
from segnas.spaces.base import Space

NAME = "auxcell"
#: Encoder maps feeding the decoder pool (strides 4, 8, 16, 32).
NUM_ENCODER_MAPS = 4
ENCODER_OUT_INDICES = (1, 2, 3, 4)
ENCODER_STRIDE = 32

#: The published designs, in the authors' encoding (op ids index OP_NAMES).
PAPER_ENCODINGS: dict[str, list] = {
    "auxcell-arch0": [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],
    "auxcell-arch1": [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]],
    "auxcell-arch2": [[5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]], [[1, 3], [4, 3], [2, 2]]],
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _op_name(value: Any, where: str) -> str:
    if _is_int(value) and 0 <= value < len(OP_NAMES):
        return OP_NAMES[value]
    raise GenotypeError(f"{NAME}: {where}: op id must be an int in [0, {len(OP_NAMES)}), got {value!r}")


def from_encoding(encoding: Any) -> dict[str, Any]:
    """The ``cell`` and ``connections`` labels of an authors' encoding; GenotypeError if malformed."""
    try:
        cell, connections = encoding
        first, *layers = cell
    except (TypeError, ValueError) as err:
        raise GenotypeError(
            f"{NAME}: encoding must be [[op0, [p1, p2, o1, o2] x {NUM_CELL_LAYERS}], "
            f"[[i1, i2] x {NUM_BLOCKS}]], got {encoding!r}"
        ) from err
    names = []
    for index, layer in enumerate(layers, start=1):
        if not isinstance(layer, (list, tuple)) or len(layer) != 4:
            raise GenotypeError(f"{NAME}: encoding cell layer {index} must be [p1, p2, o1, o2], got {layer!r}")
        names.append(
            [
                layer[0],
                layer[1],
                _op_name(layer[2], f"encoding cell layer {index}"),
                _op_name(layer[3], f"encoding cell layer {index}"),
            ]
        )
    return {
        "cell": {"first": _op_name(first, "encoding cell op0"), "layers": names},
        "connections": [list(c) if isinstance(c, (list, tuple)) else c for c in connections],
    }


def to_encoding(arch: dict[str, Any]) -> list:
    """The authors' encoding of a validated arch (op names back to ids)."""
    cell = arch["cell"]
    layers = [[a, b, OP_NAMES.index(op_a), OP_NAMES.index(op_b)] for a, b, op_a, op_b in cell["layers"]]
    return [[OP_NAMES.index(cell["first"]), *layers], [list(c) for c in arch["connections"]]]


class AuxCellSpace(Space):
    """Searched decoder space; see the module docstring for labels and the encoding."""

    name = NAME
    defaults: ClassVar[dict[str, Any]] = {"backbone": "mobilenetv2_100", "width": 64, "sep_repeats": 2}
    presets: ClassVar[dict[str, dict[str, Any]]] = {name: {"encoding": enc} for name, enc in PAPER_ENCODINGS.items()}

    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        arch = dict(arch)
        if "encoding" in arch:
            if "cell" in arch or "connections" in arch:
                raise GenotypeError(f"{NAME}: give either 'encoding' or 'cell' + 'connections', not both")
            arch.update(from_encoding(arch.pop("encoding")))
        known = {*self.defaults, "cell", "connections"}
        unknown = sorted(set(arch) - known)
        if unknown:
            raise GenotypeError(f"{NAME}: unknown label(s) {unknown}; known labels: {sorted(known)} or 'encoding'")
        missing = sorted({"cell", "connections"} - set(arch))
        if missing:
            raise GenotypeError(f"{NAME}: missing label(s) {missing}")
        out = {**self.defaults, **arch}
        message = unknown_backbone_message(out["backbone"]) if isinstance(out["backbone"], str) else "not a string"
        if message is not None:
            raise GenotypeError(f"{NAME}: label 'backbone': {message}")
        for label in ("width", "sep_repeats"):
            if not _is_int(out[label]) or out[label] <= 0:
                raise GenotypeError(f"{NAME}: label '{label}' must be a positive int, got {out[label]!r}")
        out["cell"] = self._check_cell(out["cell"])
        out["connections"] = self._check_connections(out["connections"])
        return out

    @staticmethod
    def _check_cell(cell: Any) -> dict[str, Any]:
        if not isinstance(cell, dict) or set(cell) != {"first", "layers"}:
            raise GenotypeError(f"{NAME}: label 'cell' must be a mapping with keys first, layers; got {cell!r}")
        if cell["first"] not in OP_NAMES:
            raise GenotypeError(f"{NAME}: cell.first must be one of {list(OP_NAMES)}, got {cell['first']!r}")
        layers = cell["layers"]
        if not isinstance(layers, (list, tuple)) or len(layers) != NUM_CELL_LAYERS:
            raise GenotypeError(f"{NAME}: cell.layers must hold {NUM_CELL_LAYERS} layers, got {layers!r}")
        checked = []
        for index, layer in enumerate(layers, start=1):
            where = f"{NAME}: cell layer {index}"
            if not isinstance(layer, (list, tuple)) or len(layer) != 4:
                raise GenotypeError(f"{where} must be [position_a, position_b, op_a, op_b], got {layer!r}")
            pos_a, pos_b, op_a, op_b = layer
            limit = layer_positions(index)
            for pos in (pos_a, pos_b):
                if not _is_int(pos) or not 0 <= pos < limit:
                    raise GenotypeError(
                        f"{where}: position {pos!r} outside [0, {limit}) (the cell features "
                        "written before it: input, first op, then two ops and their sum per layer)"
                    )
            for op in (op_a, op_b):
                if op not in OP_NAMES:
                    raise GenotypeError(f"{where}: op {op!r} is not one of {list(OP_NAMES)}")
            checked.append([pos_a, pos_b, op_a, op_b])
        return {"first": cell["first"], "layers": checked}

    @staticmethod
    def _check_connections(connections: Any) -> list[list[int]]:
        if not isinstance(connections, (list, tuple)) or len(connections) != NUM_BLOCKS:
            raise GenotypeError(f"{NAME}: label 'connections' must hold {NUM_BLOCKS} pairs, got {connections!r}")
        for index, pair in enumerate(connections):
            pool = NUM_ENCODER_MAPS + index
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not all(_is_int(i) and 0 <= i < pool for i in pair)
            ):
                raise GenotypeError(
                    f"{NAME}: connection {index} must be two pool indices in [0, {pool}) "
                    f"(4 encoder maps, then earlier block outputs), got {pair!r}"
                )
        return [list(pair) for pair in connections]

    def build(
        self,
        genotype: Genotype,
        num_classes: int,
        pretrained: bool = False,
        backbone_weights: str | None = None,
        aux_heads: bool = False,
    ) -> nn.Module:
        """Encoder + decoder for ``genotype``; ``aux_heads`` adds the search's auxiliary cells."""
        arch = self.check(genotype).arch
        if not _is_int(num_classes) or num_classes <= 0:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        encoder = build_backbone(
            arch["backbone"],
            output_stride=ENCODER_STRIDE,
            pretrained=bool(pretrained),
            weights=backbone_weights,
            out_indices=ENCODER_OUT_INDICES,
        )
        return AuxCellNet(encoder, build_decoder(arch, encoder.feature_info.channels(), num_classes, aux_heads))


def build_decoder(
    arch: dict[str, Any], in_channels: list[int], num_classes: int, aux_heads: bool = False, aux_cell: bool = True
) -> AuxCellDecoder:
    """The decoder alone, for searches that keep one encoder for every child."""
    cell = arch["cell"]
    return AuxCellDecoder(
        in_channels,
        num_classes,
        cell["first"],
        cell["layers"],
        arch["connections"],
        width=arch["width"],
        repeats=arch["sep_repeats"],
        aux_heads=aux_heads,
        aux_cell=aux_cell,
    )


def describe(arch: dict[str, Any]) -> str:
    """The cell as a formula over its input ``x`` and the decoder as sums of pool entries
    (``l1..l4`` encoder maps at strides 4..32), e.g. for logs and ``search.csv``."""
    cell = arch["cell"]
    features = ["x", f"{cell['first']}(x)"]
    outputs = [1]
    for index, (pos_a, pos_b, op_a, op_b) in enumerate(cell["layers"], start=1):
        a, b = f"{op_a}({features[pos_a]})", f"{op_b}({features[pos_b]})"
        features += [a, b, f"({a} + {b})"]
        outputs = [p for p in outputs if p not in (pos_a, pos_b)] + [3 * index + 1]
    pool = [f"l{i + 1}" for i in range(NUM_ENCODER_MAPS)]
    collected: list[int] = []
    for index, (a, b) in enumerate(arch["connections"]):
        pool.append(f"cell({pool[a]}) + cell({pool[b]})")
        collected = [c for c in collected if c not in (a, b)] + [NUM_ENCODER_MAPS + index]
    return (
        f"cell(x) = {' + '.join(features[i] for i in outputs)}; "
        f"decoder = concat[{'; '.join(pool[i] for i in collected)}]"
    )
