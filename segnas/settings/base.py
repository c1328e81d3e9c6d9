"""The pieces every settings dataclass is made of.

A config group's schema is a dataclass registered in Hydra's ConfigStore
(:mod:`segnas.settings.store`): Hydra checks each key's *type* and, for :class:`Choice` fields,
its *allowed values* while it composes the config, so ``searcher.pop_size=x`` or
``train.scheduler=linear`` fail before the job starts. What a type cannot say (a range, a rule
between two keys, a file that must exist) is each dataclass's ``__post_init__``, which raises
:class:`SettingError` naming the key relative to the dataclass; :func:`to_settings` builds the
typed objects from the composed config and prefixes the key with where the node sits
(``searcher.fmas.pop_size``), so the user reads the key to change.

Imports only the standard library, omegaconf and :mod:`segnas.errors`: the settings are built
before torch is loaded, so a mistake is reported within about a second.
"""

import dataclasses
import enum
import re
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from segnas.errors import ConfigError
from segnas.offline_weights import AUTO

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class Choice(str, enum.Enum):
    """A key with a fixed set of string values. Members are named by their values, so Hydra
    accepts the value as typed (``scheduler=poly``) and lists the choices when it does not; a
    member compares equal to its string and prints as it."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class SettingError(ConfigError):
    """A setting out of range or against another: ``key`` is relative to the dataclass that
    raised it until :func:`to_settings` prefixes it with the node's place in the config. (With
    ``expected`` None, ``key`` is the whole message, as omegaconf re-raises it.)"""

    def __init__(self, key: str, expected: str | None = None, value: Any = dataclasses.MISSING) -> None:
        self.key, self.expected, self.value = key, expected, value
        super().__init__(key if expected is None else self._line())

    def _line(self) -> str:
        if self.value is dataclasses.MISSING:
            return f"{self.key}: expected {self.expected}"
        return f"{self.key}={shown(self.value)}: expected {self.expected}"

    def under(self, prefix: str) -> "SettingError":
        """The same error with ``key`` read from one node higher up."""
        if self.expected is None or not prefix:
            return self
        return SettingError(f"{prefix}.{self.key}", self.expected, self.value)


def shown(value: Any) -> str:
    """A value as the user would type it in an override (null, true, [1, 2])."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return str(value)


def fail(key: str, expected: str, value: Any = dataclasses.MISSING) -> NoReturn:
    raise SettingError(key, expected, value)


# rules for __post_init__ --------------------------------------------------------------------------


def at_least(settings: Any, key: str, low: float, why: str = "") -> None:
    """``settings.<key>`` (dotted for a nested value) is null or >= ``low``."""
    value = _get(settings, key)
    if value is not None and value < low:
        integer = isinstance(value, int) and isinstance(low, int)
        fail(
            key,
            (("a positive integer" if low == 1 else f"an integer >= {low}") if integer else f"a number >= {low:g}")
            + (f" ({why})" if why else ""),
            value,
        )


def positive(settings: Any, *keys: str) -> None:
    """Each key is null or > 0 (integers: >= 1)."""
    for key in keys:
        value = _get(settings, key)
        if value is not None and value <= 0:
            fail(key, "a positive integer" if isinstance(value, int) else "a number > 0", value)


def between(
    settings: Any,
    key: str,
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    why: str = "",
) -> None:
    """``settings.<key>`` is null or within the bounds: inclusive (``low``, ``high``) or exclusive
    (``above``, ``below``)."""
    value = _get(settings, key)
    if value is None:
        return
    lower = f"[{low:g}" if low is not None else f"({above:g}" if above is not None else "(-inf"
    upper = f"{high:g}]" if high is not None else f"{below:g})" if below is not None else "inf)"
    if not (
        (low is None or value >= low)
        and (above is None or value > above)
        and (high is None or value <= high)
        and (below is None or value < below)
    ):
        fail(key, f"a value in {lower}, {upper}" + (f" ({why})" if why else ""), value)


def size(settings: Any, key: str) -> None:
    """Null or ``[H, W]``: two positive integers."""
    value = _get(settings, key)
    if value is not None and (len(value) != 2 or min(value) < 1):
        fail(key, "[H, W], two positive integers", value)


def device(settings: Any, key: str) -> None:
    """``auto``, ``cpu`` or ``cuda[:N]`` (whether CUDA is there is asked when it is used)."""
    value = _get(settings, key)
    if not _DEVICE.fullmatch(str(value)):
        fail(key, "auto, cpu or cuda[:N]", value)


def existing(settings: Any, key: str, what: str) -> None:
    """Null, or the path of something that exists."""
    value = _get(settings, key)
    if value is not None and (not value or not Path(value).exists()):
        fail(key, f"null or an existing {what}", value)


def weights(settings: Any, key: str) -> None:
    """Initial backbone weights: null (random), ``auto`` or an existing weights file."""
    value = _get(settings, key)
    if value is not None and value != AUTO and not Path(value).is_file():
        fail(key, f"null, {AUTO} or an existing weights file", value)


def distinct(settings: Any, key: str, choices: tuple[str, ...], empty: bool = False) -> None:
    """A list of distinct names from ``choices`` (non-empty unless ``empty``)."""
    value = _get(settings, key)
    if (not value and not empty) or len(set(value)) != len(value) or any(v not in choices for v in value):
        fail(key, f"a {'' if empty else 'non-empty '}list of distinct names from {', '.join(choices)}", value)


def fractions(settings: Any, key: str) -> None:
    """A non-empty list of numbers in (0, 1]."""
    value = _get(settings, key)
    if not value or not all(0 < v <= 1 for v in value):
        fail(key, "a non-empty list of fractions in (0, 1]", value)


def optimizer(settings: Any, key: str) -> None:
    """A ``_partial_: true`` node with a ``_target_`` (an optimiser the code gives its parameters)
    and, where it has one, a positive ``lr``."""
    value = _get(settings, key)
    if value is None and getattr(settings, key, None) == MISSING:
        return
    if not isinstance(value, dict) or not isinstance(value.get("_target_"), str) or value.get("_partial_") is not True:
        fail(key, "a node with _target_ (e.g. torch.optim.SGD) and _partial_: true", value)
    lr = value.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        fail(f"{key}.lr", "a number > 0", lr)


def _get(settings: Any, key: str) -> Any:
    """The value at ``key``; a value not given yet (omegaconf's ``???``, in a schema's defaults)
    reads as None, so the rules skip it (building the settings of a config refuses it first)."""
    value = settings
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return None if isinstance(value, str) and value == MISSING else value


# building ---------------------------------------------------------------------------------------


def to_settings(node: DictConfig, prefix: str) -> Any:
    """The typed settings of a composed config node whose schema is a dataclass (nested
    dataclasses built first, each one's ``__post_init__`` run); a plain node comes back as a
    plain container. Errors name the key by its full path under ``prefix``; an interpolation that
    does not resolve or a missing value (``???``) is an error naming its key too."""
    kind = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(kind):
        return _container(node, prefix)
    values = {}
    for item in dataclasses.fields(kind):
        key = f"{prefix}.{item.name}" if prefix else item.name
        try:
            child = node[item.name]
        except Exception as err:  # noqa: BLE001 - a missing value or an interpolation that does not resolve
            raise ConfigError(f"{key}: {_first_line(err)}") from None
        if isinstance(child, DictConfig):
            child = to_settings(child, key)
        elif isinstance(child, ListConfig):
            child = _container(child, key)
        values[item.name] = child
    try:
        return kind(**values)
    except SettingError as err:
        raise err.under(prefix) from None


def _container(node: DictConfig | ListConfig, key: str) -> Any:
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - a missing value or an interpolation that does not resolve
        raise ConfigError(f"{key}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
