"""The auxcell space: presets built as the authors' code builds them, the encoding, aux heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from segnas import spaces
from segnas.errors import GenotypeError
from segnas.genotype import Genotype
from segnas.nn.auxcell import Cell, GlobalAvgPoolConv, Zero
from segnas.spaces.auxcell import (
    PAPER_ENCODINGS,
    AuxCellSpace,
    build_decoder,
    from_encoding,
    to_encoding,
)

SPACE = AuxCellSpace()
PRESETS = sorted(PAPER_ENCODINGS)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_build_and_run_at_two_sizes(preset: str) -> None:
    genotype = spaces.resolve_arch(preset)
    assert genotype.space == "auxcell" and genotype.arch["width"] == 64 and genotype.arch["sep_repeats"] == 2
    net = spaces.build(genotype, 5).eval()
    with torch.no_grad():
        for size in ((32, 32), (48, 40)):
            assert net(torch.randn(1, 3, *size)).shape == (1, 5, *size)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_round_trip_through_the_authors_encoding(preset: str, tmp_path: Path) -> None:
    genotype = spaces.resolve_arch(preset)
    assert to_encoding(genotype.arch) == PAPER_ENCODINGS[preset]
    again = SPACE.genotype({"encoding": to_encoding(genotype.arch)})
    assert again.hash == genotype.hash
    assert spaces.resolve_arch(genotype.save(tmp_path / "g.yaml")).hash == genotype.hash


def _kind(op: nn.Module) -> tuple:
    """(type, kernel, dilation, separable repeats) of a cell op, read from its modules."""
    if isinstance(op, nn.Identity):
        return ("skip",)
    if isinstance(op, Zero):
        return ("zero",)
    if isinstance(op, GlobalAvgPoolConv):
        return ("gap",)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    if depthwise:
        return ("sep", depthwise[0].kernel_size[0], depthwise[0].dilation[0], len(depthwise))
    return ("conv", convs[0].kernel_size[0], convs[0].dilation[0])


def test_arch0_uses_the_ops_and_positions_worked_out_by_hand() -> None:
    # arch0 = [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]]
    # Cell features: 0 x, 1 op0(x); layer k writes 3k-1, 3k (its ops) and 3k+1 (their sum).
    # Layer 1 reads (0, 0); layer 2 reads (0, 2) -- position 2 is layer 1's first op output;
    # layer 3 reads (0, 5) -- layer 2's first op output. No sum is read, so the output is
    # f1 + f4 + f7 + f10. Blocks read (l4, l4), (l4, l3), (l4, l1); no block output is
    # consumed, so all three (pool 4, 5, 6) are concatenated.
    net = spaces.build(spaces.resolve_arch("auxcell-arch0"), 5)
    decoder = net.decoder
    assert decoder.connections == [(3, 3), (3, 2), (3, 0)] and decoder.collected == (4, 5, 6)
    for block in decoder.blocks:
        for cell in (block.cell_a, block.cell_b):
            assert cell.positions == [(0, 0), (0, 2), (0, 5)]
            assert cell.outputs == (1, 4, 7, 10)
            assert _kind(cell.first) == ("sep", 5, 6, 2)
            assert [_kind(op) for op in cell.ops] == [
                ("conv", 3, 3),
                ("sep", 3, 1, 2),  # conv3x3 rate 3, sep3x3
                ("sep", 5, 6, 2),
                ("sep", 5, 6, 2),  # sep5x5 rate 6 twice
                ("conv", 3, 1),
                ("gap",),  # conv3x3, global average pool
            ]
    assert decoder.aux_heads is None and not any("aux" in name for name, _ in net.named_parameters())


def test_arch1_and_arch2_collect_what_no_one_consumes() -> None:
    arch1 = spaces.build(spaces.resolve_arch("auxcell-arch1"), 5).decoder
    # layer 1 reads position 1 (op0's output), so op0 is not summed into the output
    assert arch1.blocks[0].cell_a.outputs == (4, 7, 10)
    # block 2 reads block 0's output (pool 4) twice: only blocks 1 and 2 are concatenated
    assert arch1.collected == (5, 6)
    arch2 = spaces.build(spaces.resolve_arch("auxcell-arch2"), 5).decoder
    assert arch2.blocks[0].cell_a.outputs == (1, 4, 7, 10) and arch2.collected == (5, 6)


def test_cell_indexing_on_identity_ops_matches_hand_arithmetic() -> None:
    # f0 = x, f1 = skip(x) = x; layer 1 reads (0, 1): f2 = x, f3 = x, f4 = 2x (consumes f1);
    # layer 2 reads (2, 4): f5 = skip(f2) = x, f6 = zero(f4) = 0, f7 = x (consumes f4);
    # layer 3 reads (0, 5): f8 = x, f9 = skip(f5) = x, f10 = 2x. Output f7 + f10 = 3x.
    cell = Cell("skip", [[0, 1, "skip", "skip"], [2, 4, "skip", "zero"], [0, 5, "skip", "skip"]], channels=4)
    x = torch.randn(2, 4, 5, 5)
    assert cell.outputs == (7, 10)
    torch.testing.assert_close(cell(x), 3 * x)


def test_parameter_counts_match_a_hand_computation() -> None:
    width = 64

    def sep(k: int, repeats: int) -> int:
        return repeats * (width * k * k + width * width + 2 * width)

    def conv(k: int) -> int:
        return width * width * k * k + 2 * width

    # arch0's cell at the final width and repeats: sep5x5 r6, conv3x3 r3, sep3x3, 2x sep5x5 r6, conv3x3, gap
    expected_cell = sep(5, 2) + conv(3) + sep(3, 2) + 2 * sep(5, 2) + conv(3) + (width * width + 2 * width)
    arch = spaces.resolve_arch("auxcell-arch0").arch
    decoder = build_decoder(arch, [24, 32, 96, 320], num_classes=5)
    assert n_params(decoder.blocks[0].cell_a) == expected_cell == 122752
    adapt = sum(c * width + 2 * width for c in (24, 32, 96, 320))
    block = 2 * expected_cell + 2 * (width * width + 2 * width)
    head = (3 * width * width + 2 * width) + (width * 5 * 9 + 5)
    assert n_params(decoder) == adapt + 3 * block + head


def test_search_settings_and_aux_heads_change_only_what_they_should() -> None:
    arch = {**spaces.resolve_arch("auxcell-arch0").arch, "width": 48, "sep_repeats": 1}
    plain = build_decoder(arch, [24, 32, 96, 320], 5)
    with_aux = build_decoder(arch, [24, 32, 96, 320], 5, aux_heads=True)
    cell = n_params(plain.blocks[0].cell_a)
    assert n_params(with_aux) - n_params(plain) == 3 * (cell + 48 * 5 * 9 + 5)
    logits, aux = with_aux([torch.randn(2, c, 32 // s, 32 // s) for c, s in ((24, 4), (32, 8), (96, 16), (320, 32))])
    assert logits.shape == (2, 5, 8, 8) and [a.shape[-1] for a in aux] == [1, 2, 8]  # (l4, l4), (l4, l3), (l4, l1)


def test_exported_network_has_no_auxiliary_cells(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from segnas.hardware.onnx_export import export_onnx

    net = SPACE.build(spaces.resolve_arch("auxcell-arch1"), 5, aux_heads=True).eval()
    path = export_onnx(net, tmp_path / "m.onnx", (32, 32))
    model = onnx.load(str(path))
    exported = sum(int(torch.tensor(list(i.dims)).prod()) for i in model.graph.initializer)
    without_aux = n_params(spaces.build(spaces.resolve_arch("auxcell-arch1"), 5))
    # BatchNorm folding may merge tensors, never add aux-head-sized ones
    assert exported <= without_aux + 10_000 < n_params(net)
    assert not any("aux" in i.name for i in model.graph.initializer)


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ([[11, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]], "op id"),
        (
            [[8, [0, 2, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],
            r"layer 1: position 2 outside \[0, 2\)",
        ),
        (
            [[8, [0, 0, 5, 2], [0, 5, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],
            r"layer 2: position 5 outside \[0, 5\)",
        ),
        ([[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[4, 3], [3, 2], [3, 0]]], r"connection 0 .*\[0, 4\)"),
        ([[8, [0, 0, 5, 2], [0, 2, 8, 8]], [[3, 3], [3, 2], [3, 0]]], "3 layers"),
        ([8, [[3, 3]]], "encoding"),
    ],
)
def test_out_of_range_encodings_are_refused_clearly(encoding, message: str) -> None:
    with pytest.raises(GenotypeError, match=message):
        SPACE.genotype({"encoding": encoding})


def test_a_genotype_file_in_the_authors_encoding_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "found.yaml"
    path.write_text(
        "space: auxcell\narch:\n  encoding: [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]]\n"
    )
    assert spaces.resolve_arch(str(path)).hash == spaces.resolve_arch("auxcell-arch1").hash
    assert from_encoding(PAPER_ENCODINGS["auxcell-arch1"])["cell"]["first"] == "sep3x3"
    with pytest.raises(GenotypeError, match="unknown label"):
        SPACE.genotype({**spaces.resolve_arch("auxcell-arch1").arch, "depth": 3})
    with pytest.raises(GenotypeError, match="belongs to space"):
        SPACE.check(Genotype("deeplabv3plus", {}))
