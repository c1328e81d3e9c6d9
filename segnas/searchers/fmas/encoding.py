"""Integer encoding of elastic DeepLabV3+ sub-networks for NSGA-II.

Each gene is an index into a list of choices, so pymoo works on plain integer vectors (uniform
crossover and a resampling mutation, never floats) while genotypes stay readable dicts. Genes with a
single choice (e.g. a stage of one block) are left out of the vector.

The backbone genes follow the supernet's elastic stages (:mod:`segnas.nn.elastic_stages`): a
depth and a width gene per stage, i.e. eleven for MobileNetV2 (its last stage has one block)
and two for aligned Xception-65 (its middle flow: 1..16 blocks, one hidden width for all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segnas.genotype import Genotype
from segnas.nn.elastic import SubnetConfig, kept_channels
from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace


@dataclass(frozen=True)
class Gene:
    label: str  # depths | widths | aspp_rate | aspp_channels | decoder_channels
    index: int | None  # stage for depths/widths, rate for aspp_rate, else None
    choices: tuple[Any, ...]


def _ratios(values: Sequence[float]) -> tuple[float, ...]:
    """Distinct and ascending (FMASSettings checked they are fractions in (0, 1])."""
    return tuple(sorted({float(v) for v in values}))


class Encoding:
    """Genes of the sub-networks of one full (supernet) genotype."""

    def __init__(
        self,
        space: ElasticDeepLabV3PlusSpace,
        full: Genotype,
        width_ratios: Sequence[float],
        head_ratios: Sequence[float],
        min_depth: int = 1,
    ) -> None:
        self.space = space
        self.full = space.check(full)
        arch = self.full.arch
        widths, heads = _ratios(width_ratios), _ratios(head_ratios)
        genes: list[Gene] = []
        for stage, depth in enumerate(arch["depths"]):
            genes.append(Gene("depths", stage, tuple(range(min(min_depth, depth), depth + 1))))
        for stage in range(len(arch["depths"])):
            genes.append(Gene("widths", stage, widths))
        for rate in arch["aspp_rates"]:
            genes.append(Gene("aspp_rate", rate, (0, 1)))
        for label in ("aspp_channels", "decoder_channels"):
            genes.append(Gene(label, None, tuple(sorted({kept_channels(arch[label], r) for r in heads}))))
        self.genes = [gene for gene in genes if len(gene.choices) > 1]
        self.xl = np.zeros(len(self.genes), dtype=int)
        self.xu = np.array([len(gene.choices) - 1 for gene in self.genes], dtype=int)

    @property
    def n_var(self) -> int:
        return len(self.genes)

    def decode(self, x: Sequence[int]) -> Genotype:
        arch = {k: (list(v) if isinstance(v, list) else v) for k, v in self.full.arch.items()}
        kept_rates = set(arch["aspp_rates"])
        for gene, value in zip(self.genes, np.clip(np.asarray(x, dtype=int), self.xl, self.xu)):
            choice = gene.choices[int(value)]
            if gene.label in ("depths", "widths"):
                arch[gene.label][gene.index] = choice
            elif gene.label == "aspp_rate":
                if not choice:
                    kept_rates.discard(gene.index)
            else:
                arch[gene.label] = choice
        arch["aspp_rates"] = [r for r in self.full.arch["aspp_rates"] if r in kept_rates]
        return self.space.genotype(arch)


def subnet_config(genotype: Genotype) -> SubnetConfig:
    """What :func:`segnas.nn.elastic.extract` needs from an elastic genotype."""
    arch = genotype.arch
    return SubnetConfig(
        tuple(arch["depths"]),
        tuple(arch["widths"]),
        tuple(arch["aspp_rates"]),
        int(arch["aspp_channels"]),
        int(arch["decoder_channels"]),
    )
