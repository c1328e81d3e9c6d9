"""Typed reads of config keys for the checks that run before any data is loaded.

Every read either returns the value or raises a :class:`~segnas.errors.ConfigError` that names
the key by its full path and says what was expected, so the entry point can print one line.
Imports only the standard library, omegaconf and the leaves :mod:`segnas.errors` and
:mod:`segnas.offline_weights`: the config checks must answer before torch, Lightning or the data
stack is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, ListConfig, OmegaConf

from segnas.errors import ConfigError
from segnas.offline_weights import AUTO

_ABSENT = object()
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def shown(value: Any) -> str:
    """A value as the user would type it in an override (null, true, [1, 2])."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's true is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Keys:
    """Reads the keys under one config node; errors name them as ``<prefix>.<key>``.

    The prefix is where the node sits in the run's config (``searcher``, or
    ``searcher.fmas`` for the settings a random baseline borrows), so the error names the key
    the user has to change.
    """

    def __init__(self, node: Any, prefix: str = "") -> None:
        self.node = node
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def raw(self, key: str) -> Any:
        """The resolved value, or ``_ABSENT`` when the key is not in the config at all."""
        try:
            return OmegaConf.select(self.node, key, default=_ABSENT, throw_on_missing=True)
        except Exception as err:  # a missing value (???) or an interpolation that does not resolve
            raise ConfigError(f"{self.name(key)}: {err}") from None

    def fail(self, key: str, expected: str, value: Any = _ABSENT) -> NoReturn:
        value = self.raw(key) if value is _ABSENT else value
        if value is _ABSENT:
            raise ConfigError(f"{self.name(key)} is missing: expected {expected}")
        raise ConfigError(f"{self.name(key)}={shown(value)}: expected {expected}")

    def _nullable(self, key: str, null: bool, expected: str) -> tuple[Any, bool]:
        """(value, whether it is null or absent and that is allowed); otherwise a null fails here."""
        value = self.raw(key)
        if value is None or value is _ABSENT:
            if null:
                return None, True
            self.fail(key, expected, value)
        return value, False

    def integer(self, key: str, low: int | None = 1, high: int | None = None, null: bool = False,
                why: str = "") -> int | None:
        """An integer in ``[low, high]`` (either end open when None); ``why`` explains the bound."""
        if low is not None and high is not None:
            expected = f"an integer in [{low}, {high}]"
        elif low is not None:
            expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        elif high is not None:
            expected = f"an integer <= {high}"
        else:
            expected = "an integer"
        expected += " or null" if null else ""
        expected += f" ({why})" if why else ""
        value, is_null = self._nullable(key, null, expected)
        if is_null:
            return None
        if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, expected, value)
        return int(value)

    def number(self, key: str, low: float | None = None, high: float | None = None, *,
               above: float | None = None, below: float | None = None, null: bool = False) -> float | None:
        """A number with inclusive (``low``, ``high``) or exclusive (``above``, ``below``) bounds."""
        lower = f"[{low:g}" if low is not None else f"({above:g}" if above is not None else None
        upper = f"{high:g}]" if high is not None else f"{below:g})" if below is not None else None
        if lower and upper:
            expected = f"a number in {lower}, {upper}"
        elif lower:
            expected = f"a number {'>=' if low is not None else '>'} {lower[1:]}"
        elif upper:
            expected = f"a number {'<=' if high is not None else '<'} {upper[:-1]}"
        else:
            expected = "a number"
        expected += " or null" if null else ""
        value, is_null = self._nullable(key, null, expected)
        if is_null:
            return None
        if not is_number(value) or not (
            (low is None or value >= low) and (above is None or value > above)
            and (high is None or value <= high) and (below is None or value < below)
        ):
            self.fail(key, expected, value)
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def choice(self, key: str, choices: Collection[Any], null: bool = False) -> Any:
        expected = f"one of {', '.join(map(str, choices))}" + (" or null" if null else "")
        value, is_null = self._nullable(key, null, expected)
        if not is_null and value not in choices:
            self.fail(key, expected, value)
        return value

    def names(self, key: str, choices: Collection[str], empty: bool = False) -> list[str]:
        """A list of distinct names, each one of ``choices``; non-empty unless ``empty``."""
        value = self.raw(key)
        expected = f"a {'' if empty else 'non-empty '}list of distinct names from {', '.join(choices)}"
        items = list(value) if isinstance(value, (list, ListConfig)) else None
        if items is None or (not items and not empty) or len(set(map(str, items))) != len(items) \
                or any(item not in choices for item in items):
            self.fail(key, expected, value)
        return [str(item) for item in items]

    def fractions(self, key: str) -> list[float]:
        """A non-empty list of numbers in (0, 1]."""
        value = self.raw(key)
        if not isinstance(value, (list, ListConfig)) or not value \
                or not all(is_number(v) and 0 < v <= 1 for v in value):
            self.fail(key, "a non-empty list of fractions in (0, 1]", value)
        return [float(v) for v in value]

    def mapping(self, key: str, allowed: Collection[str]) -> list[str]:
        """A mapping whose keys are all among ``allowed``; returns its keys."""
        value = self.raw(key)
        if not isinstance(value, (dict, DictConfig)):
            self.fail(key, f"a mapping of {', '.join(allowed)}", value)
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise ConfigError(f"{self.name(key)}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
        return [str(k) for k in value]

    def device(self, key: str) -> str:
        """``auto``, ``cpu`` or ``cuda[:N]`` (whether CUDA is there is asked when the search starts)."""
        value = self.raw(key)
        if not isinstance(value, str) or not _DEVICE.fullmatch(value):
            self.fail(key, "auto, cpu or cuda[:N]", value)
        return value

    def path(self, key: str, what: str) -> Path | None:
        """Null, or the path of something that exists (``what`` says what it should be)."""
        value = self.raw(key)
        if value is None or value is _ABSENT:
            return None
        if not isinstance(value, str) or not value or not Path(value).exists():
            self.fail(key, f"null or an existing {what}", value)
        return Path(value)

    def weights(self, key: str) -> str | None:
        """Initial backbone weights: null (random), ``auto`` (the cached ImageNet file of the
        backbone being built, see :mod:`segnas.offline_weights`) or an existing weights file."""
        value = self.raw(key)
        if value is None or value is _ABSENT:
            return None
        if value != AUTO and (not isinstance(value, str) or not Path(value).is_file()):
            self.fail(key, f"null, {AUTO} or an existing weights file", value)
        return str(value)

    def size(self, key: str, null: bool = False) -> tuple[int, int] | None:
        """``[H, W]``: two positive integers."""
        expected = "[H, W], two positive integers" + (" or null" if null else "")
        value, is_null = self._nullable(key, null, expected)
        if is_null:
            return None
        if not isinstance(value, (list, ListConfig)) or len(value) != 2 or not all(is_int(v) and v > 0 for v in value):
            self.fail(key, expected, value)
        return int(value[0]), int(value[1])

    def partial(self, key: str) -> None:
        """A ``_partial_: true`` node with a ``_target_`` (an optimiser the code gives its
        parameters) and, where it has one, a positive ``lr``."""
        value = self.raw(key)
        if not isinstance(value, (dict, DictConfig)) or not isinstance(value.get("_target_"), str) \
                or value.get("_partial_") is not True:
            self.fail(key, "a node with _target_ (e.g. torch.optim.SGD) and _partial_: true", value)
        if "lr" in value:
            self.number(f"{key}.lr", above=0)
