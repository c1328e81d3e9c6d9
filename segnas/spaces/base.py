"""What every search space provides: validation, presets and a builder of standalone networks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import nn

from segnas.errors import GenotypeError
from segnas.genotype import Genotype


class Space(ABC):
    """An architecture space.

    Searchers ask a space for candidates and the pipeline asks it to build the winner; the space
    itself never imports a searcher.
    """

    name: str
    #: Published or reference architectures, by the name a user passes as ``arch=``.
    presets: dict[str, dict[str, Any]] = {}

    @abstractmethod
    def validate(self, arch: dict[str, Any]) -> dict[str, Any]:
        """Return ``arch`` with defaults filled in, or raise GenotypeError naming the bad label."""

    @abstractmethod
    def build(self, genotype: Genotype, num_classes: int, **options: Any) -> nn.Module:
        """A standalone network whose forward maps (N, 3, H, W) images to (N, C, H, W) logits."""

    def genotype(self, arch: dict[str, Any]) -> Genotype:
        return Genotype(self.name, self.validate(dict(arch)))

    def check(self, genotype: Genotype) -> Genotype:
        """Refuse a genotype written for another space, naming both spaces."""
        if genotype.space != self.name:
            raise GenotypeError(f"genotype {genotype.hash} belongs to space '{genotype.space}', not to '{self.name}'")
        return Genotype(self.name, self.validate(dict(genotype.arch)))
