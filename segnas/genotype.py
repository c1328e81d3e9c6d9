"""The architecture contract shared by every space and searcher.

A genotype is the name of its space plus a plain ``{label: value}`` dict, so that one run's
result can be retrained, profiled or exported by another, diffed by eye, and logged to W&B
tables. Its hash is computed from canonical JSON, so equal architectures hash equal whatever
order their keys were written in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segnas.errors import GenotypeError


def _plain(value: Any) -> Any:
    """Tuples and OmegaConf containers become lists and dicts, so YAML and JSON agree."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Genotype:
    """An architecture: its space's name and the values of that space's labels."""

    space: str
    arch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", _plain(self.arch))

    @property
    def hash(self) -> str:
        """12 hex digits of SHA-1 over the canonical JSON; stable across runs and machines."""
        text = json.dumps({"space": self.space, "arch": self.arch}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "arch": self.arch, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> Genotype:
        if not isinstance(data, dict) or "space" not in data or "arch" not in data:
            raise GenotypeError(
                f"{source}: expected a mapping with keys 'space' and 'arch', got "
                f"{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else '-'}"
            )
        if not isinstance(data["arch"], dict):
            raise GenotypeError(f"{source}: 'arch' must be a mapping of labels to values")
        return cls(space=str(data["space"]), arch=dict(data["arch"]))

    def save(self, path: str | Path) -> Path:
        """Written to a temporary file and renamed: a crash never leaves half a genotype."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
        temporary.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        if not path.is_file():
            raise GenotypeError(f"genotype file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise GenotypeError(f"genotype file {path} is not valid YAML: {err}") from err
        genotype = cls.from_dict(data, source=str(path))
        stored = data.get("hash")
        if stored is not None and stored != genotype.hash:
            raise GenotypeError(
                f"genotype file {path}: stored hash {stored} does not match its contents "
                f"({genotype.hash}); the file was edited by hand — delete the 'hash' line to accept it"
            )
        return genotype
