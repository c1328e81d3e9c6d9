"""``searcher=tiny``: the schema of tests/conf/searcher/tiny.yaml."""

from dataclasses import dataclass

from segnas.searchers.contract import SearcherSettings
from segnas.settings import base


@dataclass
class TinySettings(SearcherSettings):
    name: str = "tiny"
    samples: int = 3
    top_k: int = 2
    #: val images the search "scores" on (the pipeline then reports on the rest of val)
    val_images: int = 2
    layers: int = 3
    blocks: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "samples", "val_images", "layers", "blocks")
        base.between(self, "top_k", 1, self.samples, why=f"at most samples={self.samples}")
