"""``searcher=random``: the schema of conf/searcher/random.yaml. The matching searcher's settings
are composed under ``searcher.<space>`` and checked by that searcher's own schema, so an error
names e.g. ``searcher.fmas.pop_size``; the baseline runs with exactly those settings."""

from dataclasses import dataclass, field

from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.auxcell.settings import AuxCellSettings
from segnas.searchers.contract import SearcherSettings
from segnas.searchers.fmas.settings import FMASSettings
from segnas.settings import base
from segnas.settings.base import Choice
from segnas.settings.run import RunSettings, TaskType


class Space(Choice):
    autodeeplab = "autodeeplab"
    auxcell = "auxcell"
    fmas = "fmas"


@dataclass
class RandomSettings(SearcherSettings):
    """The space, the Auto-DeepLab space's samples and top_k, and the matching searchers' settings.

    ``task_types``, ``retrain_epochs`` and ``backbone_weights`` are the matching searcher's
    (conf/searcher/random.yaml interpolates them), so the baseline retrains as it does."""

    name: str = "random"
    task_types: list[TaskType] = field(default_factory=lambda: [TaskType.segmentation])
    space: Space = Space.autodeeplab
    #: autodeeplab space: architectures sampled, sharing the matched training steps evenly
    samples: int = 4
    #: autodeeplab space: best sampled architectures handed on (auxcell and fmas: searcher.<space>.top_k)
    top_k: int = 1
    autodeeplab: AutoDeepLabSettings = field(default_factory=AutoDeepLabSettings)
    auxcell: AuxCellSettings = field(default_factory=AuxCellSettings)
    fmas: FMASSettings = field(default_factory=FMASSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "samples")
        base.between(self, "top_k", 1, self.samples, why=f"at most samples={self.samples}")

    @property
    def matching(self) -> SearcherSettings:
        """The settings of the searcher whose space is searched."""
        return getattr(self, str(self.space))

    def check_run(self, run: RunSettings) -> None:
        try:
            self.matching.check_run(run)
        except base.SettingError as err:
            raise err.under(str(self.space)) from None
