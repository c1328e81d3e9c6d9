"""Elastic DeepLabV3+: sliced sub-networks equal the masked supernet, the full genotype
reproduces the network, and ``build`` matches what extraction produces."""

from __future__ import annotations

import random

import pytest
import torch

from segnas import spaces
from segnas.errors import GenotypeError
from segnas.hardware import count_macs, count_params
from segnas.nn.elastic import (
    SubnetConfig,
    active,
    extract,
    sort_channels,
)
from segnas.nn.elastic_stages import elastic_stages, stage_depths
from segnas.searchers.fmas.encoding import Encoding, subnet_config
from segnas.searchers.fmas.scoring import recalibrate_bn
from segnas.training import load_network
from segnas.training.checkpoint import save_network

SPACE = "elastic-deeplabv3plus"
FULL_DEPTHS = [2, 3, 4, 3, 3, 1]


@pytest.fixture(scope="module")
def supernet():
    """A full network whose BatchNorm statistics are not the identity (so slicing them matters)."""
    torch.manual_seed(0)
    net = spaces.build(spaces.resolve_arch("elastic-deeplabv3plus-mobilenetv2"), 3)
    with torch.no_grad():
        net.train()
        for _ in range(2):
            net(torch.randn(4, 3, 32, 32))
    return net.eval()


def random_arch(rng: random.Random) -> dict:
    return {
        "depths": [rng.randint(1, d) for d in FULL_DEPTHS],
        "widths": [rng.choice([0.25, 0.5, 0.75, 1.0]) for _ in FULL_DEPTHS],
        "aspp_rates": sorted(rng.sample([6, 12, 18], rng.randint(0, 3))),
        "aspp_channels": rng.choice([64, 128, 256]),
        "decoder_channels": rng.choice([32, 128, 256]),
    }


def test_full_genotype_fills_explicit_lists() -> None:
    genotype = spaces.resolve_arch("elastic-deeplabv3plus-mobilenetv2")
    assert genotype.arch["depths"] == FULL_DEPTHS and genotype.arch["widths"] == [1.0] * 6
    explicit = spaces.get_space(SPACE).genotype({"depths": FULL_DEPTHS, "widths": [1] * 6})
    assert explicit.hash == genotype.hash


@pytest.mark.parametrize("seed", range(4))
def test_extracted_subnet_equals_masked_supernet(supernet, seed: int) -> None:
    genotype = spaces.get_space(SPACE).genotype(random_arch(random.Random(seed)))
    config = subnet_config(genotype)
    sub = extract(supernet, config).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        with active(supernet, config):
            masked = supernet(x)
        unmasked = supernet(x)
        sliced = sub(x)
    assert torch.allclose(sliced, masked, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(sliced, unmasked, atol=1e-3), "the configuration should change the output"
    assert count_params(sub) < count_params(supernet)


def full_config(net) -> SubnetConfig:
    """The configuration that keeps everything: extracting it reproduces ``net``."""
    depths = stage_depths(net.backbone)
    return SubnetConfig(
        tuple(depths),
        tuple(1.0 for _ in depths),
        tuple(net.aspp.rates),
        net.aspp.out_channels,
        net.decoder.classifier.in_channels,
    )


@pytest.mark.parametrize("backbone", ["supernet", "xception"])
def test_full_configuration_reproduces_the_network_exactly(backbone: str, request: pytest.FixtureRequest) -> None:
    """MobileNetV2 (``supernet``) and Xception-65: the full genotype extracts the original."""
    net = request.getfixturevalue(backbone)
    copy = extract(net, full_config(net)).eval()
    reference, extracted = net.state_dict(), copy.state_dict()
    assert list(reference) == list(extracted)
    assert all(torch.equal(reference[k], extracted[k]) for k in reference)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(copy(x), net(x))


def test_build_matches_extraction_and_costs(supernet, tmp_path) -> None:
    """A genotype built from scratch has the sliced sub-network's keys and shapes (so a fine-tuned
    sub-network reloads via load_network), hence the same params and MACs."""
    genotype = spaces.get_space(SPACE).genotype(random_arch(random.Random(7)))
    sub = extract(supernet, subnet_config(genotype)).eval()
    built = spaces.build(genotype, 3)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in sub.state_dict().items()}
    assert count_params(built) == count_params(sub)
    assert count_macs(built, (32, 32)) == count_macs(sub, (32, 32))
    path = save_network(tmp_path / "model.pt", genotype, 3, sub)
    loaded_genotype, _, loaded = load_network(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), sub(x))
    assert loaded_genotype.hash == genotype.hash


def test_hand_count_of_a_sliced_block(supernet) -> None:
    """Params of a block at half width, counted by hand: expansion, depthwise, projection, 2 BNs."""
    config = SubnetConfig((1, 1, 1, 1, 1, 1), (0.5,) * 6, (), 256, 256)
    sub = extract(supernet, config)
    block = sub.backbone.blocks[1][0]
    cin, cout = 16, 24
    hidden = round(96 * 0.5)
    expected = cin * hidden + 9 * hidden + hidden * cout + 2 * 2 * hidden + 2 * cout
    assert sum(p.numel() for p in block.parameters()) == expected


def test_sorting_hidden_channels_keeps_the_function(supernet) -> None:
    import copy

    net = copy.deepcopy(supernet)
    sort_channels(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), supernet(x), atol=1e-5, rtol=1e-4)
    block = net.backbone.blocks[2][0]
    norms = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(norms[:-1] >= norms[1:])


def descending(columns: torch.Tensor) -> bool:
    norms = columns.abs().sum(dim=(0, 2, 3))
    return bool(torch.all(norms[:-1] >= norms[1:]))


def test_sorting_orders_every_head_channel_group_and_keeps_the_function(supernet) -> None:
    """ASPP branch outputs (each branch its own columns of the projection), the projection's
    outputs, both refinement convolutions' outputs: each read in decreasing L1 order after
    sorting, and the network's output is unchanged."""
    import copy

    net = copy.deepcopy(supernet)
    sort_channels(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), supernet(x), atol=1e-5, rtol=1e-4)
    width = net.aspp.out_channels
    projection = net.aspp.project[0][0].weight
    assert all(descending(projection[:, p * width : (p + 1) * width]) for p in range(len(net.aspp.branches)))
    assert descending(net.decoder.refine[0][0].weight[:, :width])
    assert descending(net.decoder.refine[1][0].weight) and descending(net.decoder.classifier.weight)


def test_a_sliced_head_keeps_the_channels_read_hardest(supernet) -> None:
    """After sorting, a sub-network's decoder keeps the k refinement channels whose classifier
    columns have the largest L1 norm in the unsorted network, and its ASPP 1x1 branch keeps the k
    outputs read hardest by the projection (not the first k in training order)."""
    import copy

    net = sort_channels(copy.deepcopy(supernet))
    k = 64
    sub = extract(net, SubnetConfig(tuple(FULL_DEPTHS), (1.0,) * 6, (6, 12, 18), k, k))
    classifier = supernet.decoder.classifier.weight
    top = torch.argsort(classifier.abs().sum(dim=(0, 2, 3)), descending=True)[:k]
    torch.testing.assert_close(sub.decoder.classifier.weight, classifier[:, top])
    width = supernet.aspp.out_channels
    read = supernet.aspp.project[0][0].weight[:, :width].abs().sum(dim=(0, 2, 3))
    top = torch.argsort(read, descending=True)[:k]
    torch.testing.assert_close(sub.aspp.branches[0][0].weight, supernet.aspp.branches[0][0].weight[top])


@pytest.mark.parametrize(
    "arch, match",
    [
        ({"depths": [3, 3, 4, 3, 3, 1]}, "depths"),
        ({"depths": [2, 3]}, "depths"),
        ({"widths": [0.0] * 6}, "widths"),
        ({"widths": [1.0] * 5}, "widths"),
    ],
)
def test_bad_genotypes_name_the_label(arch: dict, match: str) -> None:
    with pytest.raises(GenotypeError, match=match):
        spaces.get_space(SPACE).genotype(arch)


def test_extract_refuses_a_rate_the_supernet_lacks(supernet) -> None:
    with pytest.raises(GenotypeError, match="aspp_rates"):
        extract(supernet, SubnetConfig(tuple(FULL_DEPTHS), (1.0,) * 6, (24,), 256, 256))


# --- aligned Xception-65: the middle flow (16 identity-residual blocks of 728 channels) is elastic ---

XCEPTION_MIDDLE = 16


@pytest.fixture(scope="module")
def xception():
    """The paper's backbone (~40M params, built once). Its BatchNorm statistics are those of real
    batches: with timm's initial ones, activations shrink block after block and the middle flow's
    residual branches barely move the features, so a wrong slice there could go unnoticed."""
    torch.manual_seed(0)
    net = spaces.build(spaces.resolve_arch("elastic-deeplabv3plus-xception"), 3)
    return recalibrate_bn(net, [torch.randn(4, 3, 32, 32)])


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 reordering noise, measured against the map's largest value (activations
    reach tens here, and near-zero entries make a purely relative test meaningless)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=2e-5 * float(expected.abs().max()))


def xception_arch(rng: random.Random) -> dict:
    return {
        "backbone": "xception65",
        "depths": [rng.randint(1, XCEPTION_MIDDLE - 1)],
        "widths": [rng.choice([0.25, 0.5, 0.75])],
        "aspp_rates": sorted(rng.sample([6, 12, 18], rng.randint(0, 2))),
        "aspp_channels": rng.choice([64, 128]),
        "decoder_channels": rng.choice([32, 128]),
    }


def test_xception_middle_flow_is_one_elastic_stage(xception) -> None:
    genotype = spaces.resolve_arch("elastic-deeplabv3plus-xception")
    assert genotype.arch["depths"] == [XCEPTION_MIDDLE] and genotype.arch["widths"] == [1.0]
    (stage,) = elastic_stages(xception.backbone)
    assert stage.names == tuple(f"blocks_{i}" for i in range(3, 3 + XCEPTION_MIDDLE))
    with pytest.raises(GenotypeError, match="depths"):
        spaces.get_space(SPACE).genotype({"backbone": "xception65", "depths": [XCEPTION_MIDDLE + 1]})


@pytest.mark.parametrize(
    "config",
    [subnet_config(spaces.get_space(SPACE).genotype(xception_arch(random.Random(seed)))) for seed in range(2)]
    + [SubnetConfig((5,), (0.5,), (6, 12, 18), 256, 256)],
    ids=["random0", "random1", "backbone-only"],
)
def test_xception_subnet_equals_masked_supernet(xception, config: SubnetConfig) -> None:
    """Sliced and masked agree on every backbone feature map and on the logits; the feature map
    right after the middle flow (tapped inside the next block) moves by a sizeable fraction."""
    sub = extract(xception, config).eval()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(sum(config.depths)))
    with torch.no_grad():
        with active(xception, config):
            masked_features, masked = xception.backbone(x), xception(x)
        full_features = xception.backbone(x)
        sliced_features, sliced = sub.backbone(x), sub(x)
    for mine, reference in zip(sliced_features, masked_features):
        assert_close_to_scale(mine, reference)
    assert_close_to_scale(sliced, masked)
    after_middle, full = sliced_features[2], full_features[2]
    assert (after_middle - full).abs().max() > 0.1 * full.abs().max(), "the configuration should change the features"
    assert len(elastic_stages(sub.backbone)[0].names) == config.depths[0]


def test_xception_build_matches_extraction_and_costs(xception) -> None:
    genotype = spaces.get_space(SPACE).genotype(xception_arch(random.Random(5)))
    sub = extract(xception, subnet_config(genotype)).eval()
    built = spaces.build(genotype, 3)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in sub.state_dict().items()}
    assert count_params(built) == count_params(sub) < count_params(xception)
    assert count_macs(built, (32, 32)) == count_macs(sub, (32, 32)) < count_macs(xception, (32, 32))


def test_hand_count_of_sliced_xception_middle_blocks(xception) -> None:
    """One middle block at half width, counted by hand: three separable convs (depthwise 3x3 +
    pointwise 1x1, each followed by a BatchNorm) over 728 -> h -> h -> 728 channels; its MACs are
    what one more block adds at the middle flow's 2x2 map (32 px input, stride 16)."""
    c, h = 728, round(728 * 0.5)
    config = SubnetConfig((1,), (0.5,), (), 256, 256)
    one, two = extract(xception, config), extract(xception, SubnetConfig((2,), (0.5,), (), 256, 256))
    block = one.backbone.blocks_3
    params = (9 * c + 2 * c + c * h + 2 * h) + (9 * h + 2 * h + h * h + 2 * h) + (9 * h + 2 * h + h * c + 2 * c)
    assert sum(p.numel() for p in block.parameters()) == params
    assert count_params(two) - count_params(one) == params
    pixels = 2 * 2
    macs = pixels * (9 * c + c * h + 9 * h + h * h + 9 * h + h * c)
    assert count_macs(two, (32, 32)) - count_macs(one, (32, 32)) == macs


def test_sorting_xception_hidden_channels_keeps_the_function(xception) -> None:
    import copy

    net = copy.deepcopy(xception)
    sort_channels(net)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_to_scale(net(x), xception(x))
    stack = net.backbone.blocks_7.stack
    for reader in (stack.conv2.conv_pw, stack.conv3.conv_pw):
        norms = reader.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(norms[:-1] >= norms[1:])


def test_xception_encoding_searches_the_middle_flow(xception) -> None:
    space = spaces.get_space(SPACE)
    encoding = Encoding(space, spaces.resolve_arch("elastic-deeplabv3plus-xception"), [0.5, 1.0], [0.5, 1.0])
    genes = {(g.label, g.index): g.choices for g in encoding.genes}
    assert genes[("depths", 0)] == tuple(range(1, XCEPTION_MIDDLE + 1)) and genes[("widths", 0)] == (0.5, 1.0)
    genotype = encoding.decode([3 if g.label == "depths" else 0 for g in encoding.genes])
    assert genotype.arch["depths"] == [4] and genotype.arch["widths"] == [0.5]


@pytest.mark.parametrize("seed", range(3))
def test_a_scoring_slice_shares_the_weights_and_owns_its_statistics(supernet, seed: int) -> None:
    """extract(share_weights=True), the one FMAS scores: the same network as a standalone copy,
    unsliced weights are the supernet's own tensors (no copy of the supernet), BatchNorm statistics
    its own (recalibrating it leaves the supernet's as they were)."""
    genotype = spaces.get_space(SPACE).genotype(random_arch(random.Random(seed)))
    config = subnet_config(genotype)
    shared, copied = extract(supernet, config, share_weights=True).eval(), extract(supernet, config).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(shared(x), copied(x), rtol=0, atol=0)
    supernet_storage = {p.untyped_storage().data_ptr() for p in supernet.parameters()}
    assert shared.backbone.conv_stem.weight.data_ptr() == supernet.backbone.conv_stem.weight.data_ptr()  # never sliced
    # the standalone copy owns every tensor (fine-tuning it leaves the supernet as it was)
    assert not {p.untyped_storage().data_ptr() for p in copied.parameters()} & supernet_storage
    concatenations = [*shared.aspp.project.parameters(), *shared.decoder.refine[0].parameters()]
    assert {p.untyped_storage().data_ptr() for p in shared.parameters()} <= supernet_storage | {
        p.untyped_storage().data_ptr() for p in concatenations
    }  # only what reads a concatenation is copied
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    recalibrate_bn(shared, [torch.randn(4, 3, 32, 32)])
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(shared.backbone.bn1.running_mean, supernet.backbone.bn1.running_mean)
