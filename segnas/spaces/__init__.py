"""Registry of architecture spaces and resolution of ``arch=`` (a preset name or a genotype file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from segnas.errors import GenotypeError
from segnas.genotype import Genotype
from segnas.spaces.autodeeplab import AutoDeepLabSpace
from segnas.spaces.auxcell import AuxCellSpace
from segnas.spaces.base import Space
from segnas.spaces.deeplabv3plus import DeepLabV3PlusSpace
from segnas.spaces.elastic_deeplabv3plus import ElasticDeepLabV3PlusSpace
from segnas.spaces.lraspp import LRASPPSpace

SPACES: dict[str, Space] = {
    space.name: space
    for space in (DeepLabV3PlusSpace(), AutoDeepLabSpace(), AuxCellSpace(), ElasticDeepLabV3PlusSpace(), LRASPPSpace())
}


def get_space(name: str) -> Space:
    if name not in SPACES:
        raise GenotypeError(f"unknown space '{name}'; known spaces: {sorted(SPACES)}")
    return SPACES[name]


def presets() -> dict[str, Genotype]:
    """Every preset of every space, by name."""
    return {
        preset: Genotype(space.name, space.validate(dict(arch)))
        for space in SPACES.values()
        for preset, arch in space.presets.items()
    }


def resolve_arch(arch: str | Path | dict[str, Any] | Genotype) -> Genotype:
    """Turn the ``arch`` config value into a validated genotype.

    A string is a preset name first and a genotype file path second, so ``arch=autodeeplab-s``
    and ``arch=outputs/.../genotype.yaml`` both work.
    """
    if isinstance(arch, Genotype):
        return get_space(arch.space).check(arch)
    if isinstance(arch, dict) or hasattr(arch, "items"):
        genotype = Genotype.from_dict(dict(arch), source="arch")
        return get_space(genotype.space).check(genotype)
    if arch is None or str(arch) == "":
        raise GenotypeError(
            f"arch is not set; give a preset ({', '.join(sorted(presets()))}) or the path of a genotype file"
        )
    known = presets()
    if str(arch) in known:
        return known[str(arch)]
    path = Path(str(arch))
    if path.suffix in {".yaml", ".yml", ".json"} or path.exists():
        genotype = Genotype.load(path)
        return get_space(genotype.space).check(genotype)
    raise GenotypeError(f"arch={arch}: not a preset ({', '.join(sorted(known))}) and not a genotype file")


def build(genotype: Genotype, num_classes: int, **options: Any) -> nn.Module:
    space = get_space(genotype.space)
    return space.build(space.check(genotype), num_classes, **options)


__all__ = ["SPACES", "Space", "build", "get_space", "presets", "resolve_arch"]
