"""Every searcher segnas ships: its name (``searcher=<name>``, ``conf/searcher/<name>.yaml``), its
settings (the schema of that file) and its search entry (``module:function``, imported when the
search runs, so this registry stays light enough for the config check).

Adding a searcher is one line here (docs/searchers.md)."""

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from segnas.searchers.autodeeplab.settings import AutoDeepLabSettings
from segnas.searchers.auxcell.settings import AuxCellSettings
from segnas.searchers.contract import Search, SearcherSettings
from segnas.searchers.fmas.settings import FMASSettings
from segnas.searchers.random.settings import RandomSettings


@dataclass(frozen=True)
class Registration:
    settings: type[SearcherSettings]
    #: ``module:function`` of the search: ``search(settings, context) -> SearchResult``
    entry: str

    def search(self) -> Search:
        module, function = self.entry.split(":")
        return getattr(import_module(module), function)


SEARCHERS: dict[str, Registration] = {
    "autodeeplab": Registration(AutoDeepLabSettings, "segnas.searchers.autodeeplab.searcher:search"),
    "auxcell": Registration(AuxCellSettings, "segnas.searchers.auxcell.searcher:search"),
    "fmas": Registration(FMASSettings, "segnas.searchers.fmas.searcher:search"),
    "random": Registration(RandomSettings, "segnas.searchers.random.searcher:search"),
}


def registration(name: Any) -> Registration:
    """The searcher called ``name``, or an error listing the known ones."""
    from segnas.errors import ConfigError

    if str(name) not in SEARCHERS:
        raise ConfigError(
            f"searcher.name={name}: expected one of {', '.join(SEARCHERS)} (segnas/searchers/registry.py lists them)"
        )
    return SEARCHERS[str(name)]
