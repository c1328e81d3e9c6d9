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
    full_config,
    sort_hidden_channels,
)
from segnas.searchers.fmas.encoding import subnet_config
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


def test_full_configuration_reproduces_the_network_exactly(supernet) -> None:
    copy = extract(supernet, full_config(supernet)).eval()
    reference, extracted = supernet.state_dict(), copy.state_dict()
    assert list(reference) == list(extracted)
    assert all(torch.equal(reference[k], extracted[k]) for k in reference)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(copy(x), supernet(x))


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
    sort_hidden_channels(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), supernet(x), atol=1e-5, rtol=1e-4)
    block = net.backbone.blocks[2][0]
    norms = block.conv_pwl.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(norms[:-1] >= norms[1:])


@pytest.mark.parametrize("arch, match", [
    ({"depths": [3, 3, 4, 3, 3, 1]}, "depths"),
    ({"depths": [2, 3]}, "depths"),
    ({"widths": [0.0] * 6}, "widths"),
    ({"widths": [1.0] * 5}, "widths"),
])
def test_bad_genotypes_name_the_label(arch: dict, match: str) -> None:
    with pytest.raises(GenotypeError, match=match):
        spaces.get_space(SPACE).genotype(arch)


def test_extract_refuses_a_rate_the_supernet_lacks(supernet) -> None:
    with pytest.raises(GenotypeError, match="aspp_rates"):
        extract(supernet, SubnetConfig(tuple(FULL_DEPTHS), (1.0,) * 6, (24,), 256, 256))


def test_xception_backbone_has_only_head_elasticity() -> None:
    genotype = spaces.resolve_arch("elastic-deeplabv3plus-xception")
    assert genotype.arch["depths"] == [] and genotype.arch["widths"] == []


def test_xception_head_subnet_equals_masked_supernet() -> None:
    """The paper's backbone: only the ASPP and decoder are elastic, slicing still matches masking."""
    torch.manual_seed(0)
    net = spaces.build(spaces.resolve_arch("elastic-deeplabv3plus-xception"), 3).eval()
    config = SubnetConfig((), (), (12,), 96, 64)
    sub = extract(net, config).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        with active(net, config):
            masked = net(x)
        torch.testing.assert_close(sub(x), masked, atol=1e-5, rtol=1e-4)
