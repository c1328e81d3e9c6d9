"""The Auto-DeepLab space: α/β shapes and normalisation, decoding against independent references
(brute-force paths, a hand-worked α), the batched supernet ops against per-edge ops, the final
network and the paper's presets."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from segnas import spaces
from segnas.errors import ConfigError, GenotypeError
from segnas.genotype import Genotype
from segnas.nn.cell_ops import PRIMITIVES, make_op
from segnas.spaces.autodeeplab import RELEASED_CELL, RELEASED_PATH, AutoDeepLabSpace
from segnas.spaces.autodeeplab.decode import (
    beta_mask,
    decode_cell,
    edges,
    normalise_beta,
    num_edges,
    path_log_probability,
    path_strides,
    viterbi,
)
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet, BlockEdges

SPACE = AutoDeepLabSpace()


@pytest.mark.parametrize(("blocks", "layers"), [(1, 1), (2, 3), (4, 5), (5, 12)])
def test_alpha_and_beta_shapes(blocks, layers):
    net = AutoDeepLabSupernet(3, layers=layers, filter_multiplier=2, blocks=blocks, aspp_channels=4)
    assert net.alpha.shape == (num_edges(blocks), 8) == (sum(2 + i for i in range(blocks)), 8)
    assert net.beta.shape == (layers, 4, 3)
    assert set(map(id, net.arch_parameters())).isdisjoint(map(id, net.weight_parameters()))
    assert len(list(net.parameters())) == len(net.weight_parameters()) + 2


def test_primitives_are_the_papers_eight_ops():
    assert sorted(PRIMITIVES) == sorted(
        [
            "sep_conv_3x3",
            "sep_conv_5x5",
            "atrous_conv_3x3",
            "atrous_conv_5x5",
            "avg_pool_3x3",
            "max_pool_3x3",
            "skip_connect",
            "none",
        ]
    )


@pytest.mark.parametrize("layers", [1, 2, 5, 12])
def test_beta_sums_to_one_over_each_nodes_outgoing_transitions(layers):
    torch.manual_seed(layers)
    weights = normalise_beta(torch.randn(layers, 4, 3) * 3)
    mask = beta_mask(layers)
    for layer in range(layers):
        for level in range(4):
            total = float(weights[layer, level].sum())
            if level <= min(layer, 3):  # the node exists
                assert total == pytest.approx(1.0, abs=1e-6)
                # transitions leaving the trellis get nothing; boundary nodes have two, no ad hoc factor
                assert mask[layer, level].sum() == (2 if level in (0, 3) else 3)
            else:
                assert total == 0.0


def test_boundary_softmax_runs_over_the_two_existing_transitions_only():
    beta = torch.zeros(4, 4, 3)
    beta[0, 0] = torch.tensor([5.0, 1.0, 2.0])  # stem: 'up' does not exist
    weights = normalise_beta(beta)
    expected = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    assert torch.allclose(weights[0, 0], torch.tensor([0.0, *expected.tolist()]))


def _all_paths(layers: int):
    for steps in itertools.product((-1, 0, 1), repeat=layers):
        level, path = 0, []
        for step in steps:
            level += step
            if not 0 <= level <= 3:
                break
            path.append(level)
        else:
            yield path


@pytest.mark.parametrize("layers", [1, 2, 3, 5, 7, 9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_equals_brute_force_over_every_valid_path(layers, seed):
    torch.manual_seed(seed * 31 + layers)
    weights = normalise_beta(torch.randn(layers, 4, 3) * 2)
    best = max(_all_paths(layers), key=lambda path: path_log_probability(weights, path))
    found = viterbi(weights)
    assert len(found) == layers
    assert path_log_probability(weights, found) == pytest.approx(path_log_probability(weights, best), abs=1e-9)
    assert path_log_probability(weights, found) > -math.inf


def test_viterbi_follows_a_planted_path_at_twelve_layers():
    planted = [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1]  # the released path
    beta = torch.full((12, 4, 3), -4.0)
    previous = 0
    for layer, level in enumerate(planted):
        beta[layer, previous, level - previous + 1] = 4.0
        previous = level
    assert path_strides(viterbi(normalise_beta(beta))) == RELEASED_PATH


def test_cell_decoder_matches_a_hand_worked_alpha_and_never_picks_none():
    blocks = 2
    alpha = torch.zeros(num_edges(blocks), 8)
    rows = {edge: i for i, edge in enumerate(edges(blocks))}
    col = PRIMITIVES.index
    alpha[:, col("none")] = 10.0  # `none` is the strongest op on every edge
    alpha[rows[(0, 0)], col("sep_conv_3x3")] = 3.0
    alpha[rows[(0, 1)], col("max_pool_3x3")] = 2.0
    alpha[rows[(1, 0)], col("skip_connect")] = 1.0
    alpha[rows[(1, 1)], col("atrous_conv_5x5")] = 4.0
    alpha[rows[(1, 2)], col("sep_conv_5x5")] = 5.0
    cell = decode_cell(alpha, blocks)
    assert cell == [
        [["sep_conv_3x3", 0], ["max_pool_3x3", 1]],
        [["sep_conv_5x5", 2], ["atrous_conv_5x5", 1]],  # block 1 drops its weakest input, H1
    ]
    torch.manual_seed(0)
    for _ in range(20):
        random_alpha = torch.randn(num_edges(5), 8)
        random_alpha[:, col("none")] += 5
        assert all(op != "none" for block in decode_cell(random_alpha, 5) for op, _ in block)


@pytest.mark.parametrize("size", [(6, 6), (4, 4), (2, 2), (1, 1), (2, 7), (5, 3)])
@pytest.mark.parametrize("partial", [1, 2])
def test_batched_block_edges_equal_one_mixed_op_per_edge(partial, size):
    """The grouped-convolution supernet block against the plain ops of segnas.nn.cell_ops:
    outputs, gradients of the inputs, of α's weights and of the block's own weights, and
    BatchNorm running statistics. The sizes take in the coarse levels' tiny inputs, where the
    block runs only the kernel taps that reach the input (a 5×5 rate-2 kernel on 2×2 is its
    centre) and the two atrous ops as one convolution, and rectangular ones, whose two axes keep
    different taps."""
    torch.manual_seed(0)
    channels, cells, inputs = 4, 2, 3
    block = BlockEdges(channels, cells, inputs, partial)
    states = [torch.randn(2, cells, channels, *size, requires_grad=True) for _ in range(inputs)]
    weights = torch.softmax(torch.randn(inputs, 8), dim=1).requires_grad_()
    probe = torch.randn(2, cells, channels, *size)
    out = block(states, weights)
    (out * probe).sum().backward()
    mixed = channels // partial
    ref_states = [s.detach().clone().requires_grad_() for s in states]
    ref_weights = weights.detach().clone().requires_grad_()
    ref_out, norms, ops = [], {}, {}
    for cell in range(cells):
        total, total_rest = 0, 0
        for state in range(inputs):
            edge = cell * inputs + state
            x = ref_states[state][:, cell, :mixed]
            rows = slice(edge * mixed, (edge + 1) * mixed)
            for name in PRIMITIVES[1:]:
                op = make_op(name, mixed, 1, affine=False).train()
                if name.startswith("sep_conv"):
                    source = block.sep3 if name.endswith("3x3") else block.sep5
                    convs = [m for m in op if isinstance(m, torch.nn.Conv2d)]
                    for conv, bank in zip(convs, source):
                        conv.weight.data.copy_(bank.weight[rows])
                elif name.startswith("atrous"):
                    bank = block.atrous.detach().view(cells * inputs, 2, mixed, mixed, 5, 5)[edge]
                    op.conv.weight.data.copy_(bank[0, ..., 1:4, 1:4] if name.endswith("3x3") else bank[1])
                total = total + ref_weights[state, PRIMITIVES.index(name)] * op(x)
                norms[(name, edge)] = [m for m in op.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                ops[(name, edge)] = op
            if partial > 1:
                total_rest = total_rest + ref_states[state][:, cell, mixed:]
        if partial > 1:
            total = torch.cat([total, total_rest], dim=1)
            n, c, h, w = total.shape
            total = total.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        ref_out.append(total)
    ref_out = torch.stack(ref_out, dim=1)
    (ref_out * probe).sum().backward()
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.allclose(weights.grad, ref_weights.grad, atol=1e-4)
    for state, ref in zip(states, ref_states):
        assert torch.allclose(state.grad, ref.grad, atol=1e-4)
    banks = block.atrous.grad.view(cells * inputs, 2, mixed, mixed, 5, 5)
    ring = banks[:, 0].clone()
    ring[..., 1:4, 1:4] = 0
    assert ring.abs().max() == 0
    for edge in range(cells * inputs):
        rows = slice(edge * mixed, (edge + 1) * mixed)
        for name, source in (("sep_conv_3x3", block.sep3), ("sep_conv_5x5", block.sep5)):
            convs = [m for m in ops[(name, edge)] if isinstance(m, torch.nn.Conv2d)]
            for conv, bank in zip(convs, source):
                assert torch.allclose(bank.weight.grad[rows], conv.weight.grad, atol=1e-4), name
        assert torch.allclose(banks[edge, 0, ..., 1:4, 1:4], ops[("atrous_conv_3x3", edge)].conv.weight.grad, atol=1e-4)
        assert torch.allclose(banks[edge, 1], ops[("atrous_conv_5x5", edge)].conv.weight.grad, atol=1e-4)
    width = cells * inputs * mixed
    for name, bank in [("sep_conv_3x3", 0), ("sep_conv_5x5", 1)]:
        for edge in range(cells * inputs):
            channels_of_edge = slice(bank * width + edge * mixed, bank * width + (edge + 1) * mixed)
            for norm, ref_norm in zip(block.norms[:2], norms[(name, edge)]):
                assert torch.allclose(norm.running_mean[channels_of_edge], ref_norm.running_mean, atol=1e-5)
                assert torch.allclose(norm.running_var[channels_of_edge], ref_norm.running_var, atol=1e-5)


def test_supernet_runs_on_odd_sizes_and_alpha_beta_get_gradients():
    torch.manual_seed(0)
    net = AutoDeepLabSupernet(3, layers=4, filter_multiplier=2, blocks=2, aspp_channels=4)
    logits = net(torch.randn(2, 3, 37, 45))
    assert logits.shape == (2, 3, 37, 45)
    logits.mean().backward()
    assert net.alpha.grad.abs().sum() > 0
    valid = beta_mask(4)
    assert net.beta.grad[valid].abs().sum() > 0


def test_checkpointed_supernet_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = AutoDeepLabSupernet(3, layers=3, filter_multiplier=2, blocks=2, aspp_channels=4)
    checkpointed = AutoDeepLabSupernet(
        3, layers=3, filter_multiplier=2, blocks=2, aspp_channels=4, checkpoint_cells=True
    )
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    for net in (plain, checkpointed):
        net(images).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_presets_carry_the_released_cell_and_path():
    assert set(spaces.presets()) >= {"autodeeplab-s", "autodeeplab-m", "autodeeplab-l"}
    assert RELEASED_PATH == [4, 4, 4, 8, 16, 8, 16, 16, 32, 32, 16, 8]
    # B1 = atrous5x5(H2) + sep3x3(H1), ..., B5 = sep5x5(B2) + atrous5x5(B4); inputs 0=H1, 1=H2, 2+b=block b
    assert RELEASED_CELL[0] == [["atrous_conv_5x5", 1], ["sep_conv_3x3", 0]]
    assert RELEASED_CELL[4] == [["sep_conv_5x5", 3], ["atrous_conv_5x5", 5]]
    assert [spaces.presets()[f"autodeeplab-{s}"].arch["filter_multiplier"] for s in "sml"] == [20, 32, 48]


def test_preset_s_matches_the_papers_parameter_count():
    """Paper, Table 2: Auto-DeepLab-S has 10.15M parameters (Cityscapes, 19 classes)."""
    net = spaces.build(spaces.resolve_arch("autodeeplab-s"), 19)
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(10.15, abs=0.01)


def test_final_network_follows_the_path_and_runs():
    genotype = SPACE.genotype(
        {
            "cell": RELEASED_CELL,
            "path": [8, 16, 8, 4],
            "filter_multiplier": 2,
            "aspp_channels": 8,
            "decoder_channels": 8,
            "low_level_channels": 4,
        }
    )
    net = spaces.build(genotype, 5).eval()
    strides = []
    hooks = [cell.register_forward_hook(lambda m, i, o: strides.append(64 // o.shape[-1])) for cell in net.cells]
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
        assert net(torch.randn(1, 3, 50, 70)).shape == (1, 5, 50, 70)
    assert strides[:4] == [8, 16, 8, 4]
    assert [cell.out_channels for cell in net.cells] == [5 * 2 * s // 4 for s in (8, 16, 8, 4)]
    assert net.low_level_index == 3  # the last stride-4 cell feeds the decoder
    for hook in hooks:
        hook.remove()


def test_genotype_round_trips_through_its_file(tmp_path):
    genotype = spaces.resolve_arch("autodeeplab-m")
    path = genotype.save(tmp_path / "genotype.yaml")
    again = spaces.resolve_arch(str(path))
    assert again == genotype and again.hash == genotype.hash


def test_genotype_for_another_space_is_refused(tmp_path):
    other = spaces.resolve_arch("deeplabv3plus-mobilenetv2")
    with pytest.raises(GenotypeError, match="belongs to space 'deeplabv3plus', not to 'autodeeplab'"):
        SPACE.check(other)
    path = Genotype("autodeeplab", other.arch).save(tmp_path / "wrong.yaml")
    with pytest.raises(GenotypeError, match="unknown label"):
        spaces.resolve_arch(str(path))


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"path": [4, 16]}, "at most a factor of 2"),
        ({"path": [16]}, "at most a factor of 2"),
        ({"path": [4, 64]}, "expected one of"),
        ({"cell": [[["none", 0], ["skip_connect", 1]]]}, "is not one of"),
        ({"cell": [[["skip_connect", 2], ["skip_connect", 1]]]}, "input 2"),
        ({"cell": [[["skip_connect", 0]]]}, "two \\[op, input\\] pairs"),
        ({"filter_multiplier": 0}, "filter_multiplier"),
    ],
)
def test_bad_labels_are_named(arch, message):
    base = {"cell": RELEASED_CELL, "path": RELEASED_PATH}
    with pytest.raises(GenotypeError, match=message):
        SPACE.validate({**base, **arch})


def test_backbone_weights_are_refused_for_a_network_without_backbone():
    with pytest.raises(ConfigError, match="model.pretrained"):
        spaces.build(spaces.resolve_arch("autodeeplab-s"), 19, pretrained=True)


def test_memory_saving_functions_match_numerical_gradients():
    from segnas.spaces.autodeeplab.supernet import _NormScale, _PoolMix

    torch.manual_seed(0)
    z = torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True)
    scales = torch.rand(3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _NormScale.apply(a, b, 1e-5)[0], (z, scales))
    pool_scales = torch.rand(9, dtype=torch.double, requires_grad=True)
    x = torch.randn(2, 3, 5, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_PoolMix.apply, (x, pool_scales))


def test_zero_ringed_three_by_three_kernels_stay_exact_under_training():
    torch.manual_seed(0)
    block = BlockEdges(4, 1, 2)
    ring = block.atrous.detach().view(2, 2, 4, 4, 5, 5)[:, 0].clone()
    ring[..., 1:4, 1:4] = 0
    assert ring.abs().sum() == 0
    optimizer = torch.optim.SGD(block.parameters(), lr=0.5, momentum=0.9, weight_decay=3e-4)
    for _ in range(2):
        optimizer.zero_grad()
        block(
            [torch.randn(2, 1, 4, 6, 6) for _ in range(2)], torch.softmax(torch.randn(2, 8), 1)
        ).square().sum().backward()
        optimizer.step()
    kernels = block.atrous.detach().view(2, 2, 4, 4, 5, 5)
    assert kernels[:, 0, ..., 0, :].abs().sum() == 0 and kernels[:, 0, ..., :, 4].abs().sum() == 0
    assert kernels[:, 0, ..., 1:4, 1:4].abs().sum() > 0 and kernels[:, 1, ..., 0, :].abs().sum() > 0


def test_the_decoded_architecture_has_the_highest_log_strength() -> None:
    """architecture_log_strength ranks the space as the decoding does: no sampled architecture
    scores above the decoded one, and the path term is Viterbi's log-probability."""
    import numpy as np
    import torch

    from segnas.spaces import get_space
    from segnas.spaces.autodeeplab.decode import (
        architecture_log_strength,
        decode_cell,
        normalise_beta,
        path_log_probability,
        path_strides,
        viterbi,
    )

    torch.manual_seed(0)
    blocks, layers = 3, 6
    alpha, beta = torch.randn(sum(2 + b for b in range(blocks)), 8), torch.randn(layers, 4, 3)
    cell, path = decode_cell(alpha, blocks), path_strides(viterbi(normalise_beta(beta)))
    best = architecture_log_strength(alpha, beta, cell, path)
    space, rng = get_space("autodeeplab"), np.random.default_rng(0)
    for _ in range(200):
        arch = space.sample(rng, blocks, layers).arch
        assert architecture_log_strength(alpha, beta, arch["cell"], arch["path"]) <= best + 1e-9
    levels = viterbi(normalise_beta(beta))
    assert architecture_log_strength(alpha, beta, cell, path) - architecture_log_strength(
        alpha, beta, cell, path_strides([0] * layers)
    ) == pytest.approx(
        path_log_probability(normalise_beta(beta), levels) - path_log_probability(normalise_beta(beta), [0] * layers)
    )
