"""A search budget that means the same thing for every searcher.

Searchers spend compute in different units (supernet steps, children, scored sub-networks), so
the budget is stated in the two units they all share: wall-clock seconds and training or
scoring images seen. ``budget.wall_time_s`` / ``budget.images`` in the config; each searcher
asks :meth:`Budget.exhausted` between its natural units of work (a training batch, a child, a
generation, a sampled architecture) and stops there, so a unit that has started is finished.
The first unit always runs, so every search has something to return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """``budget.wall_time_s`` / ``budget.images`` (None: no limit)."""

    wall_time_s: float | None = None
    images: int | None = None

    @property
    def limited(self) -> bool:
        return self.wall_time_s is not None or self.images is not None

    def exhausted(self, wall_time_s: float, images: int) -> str | None:
        """Why the search must stop now, or None while budget is left."""
        if self.wall_time_s is not None and wall_time_s >= self.wall_time_s:
            return f"budget.wall_time_s={self.wall_time_s:g} spent ({wall_time_s:.1f} s)"
        if self.images is not None and images >= self.images:
            return f"budget.images={self.images} spent ({images} images)"
        return None

    def summary(self, reason: str | None) -> dict[str, Any]:
        """The summary.json entries every searcher reports next to its costs."""
        return {
            "search_budget_wall_time_s": self.wall_time_s,
            "search_budget_images": self.images,
            "search_budget_exhausted": reason,
        }
