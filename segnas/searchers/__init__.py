"""How to search a space.

Each searcher is a folder here: its settings (the schema of ``conf/searcher/<name>.yaml``), its
``search(settings, context) -> SearchResult`` entry, and one line in :mod:`.registry`. What a
searcher reads of the run and hands back is :mod:`.contract` (docs/searchers.md walks through
adding one). The pipeline calls the entry, saves the winner's genotype, retrains (or fine-tunes)
the returned candidates with the shared training module and evaluates them. A searcher never
imports another searcher.

This package imports nothing heavy itself: the config check reads the registry and the
settings before torch is loaded; ``Candidate`` / ``SearchResult`` (torch) load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Candidate", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from segnas.searchers import result

        return getattr(result, name)
    raise AttributeError(f"module 'segnas.searchers' has no attribute {name!r}")
