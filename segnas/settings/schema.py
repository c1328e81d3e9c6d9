"""The schemas of the config tree: registered with Hydra's ConfigStore (so that composing the
config checks types and choices), and applied again by :func:`load`, which builds the typed
settings of a composed config (so that a config assembled in code, as ``task=compare`` does for
each of its runs, is checked the same way).

A group's schema is found by what the node instantiates (``data._target_``,
``hardware._target_``) or, for searchers, by ``searcher.name`` in the registry; a node of a
user's own (their data module, their hardware target) has none and stays a plain container.
"""

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segnas.errors import ConfigError
from segnas.searchers.registry import SEARCHERS, registration
from segnas.settings.base import SettingError, shown, to_settings
from segnas.settings.data import (
    ADE20KSettings,
    CityscapesSettings,
    FolderSettings,
    NYUDepthSettings,
    SyntheticSettings,
    VOCSettings,
)
from segnas.settings.hardware import Gap8Settings, OnnxInt8LatencySettings, OnnxLatencySettings, TorchLatencySettings
from segnas.settings.run import RunSettings

#: The ConfigStore group holding the schemas, apart from the groups users pick options from: a
#: YAML file extends its schema with ``- /schema/<group>@_here_: <name>`` first in its defaults
#: list (conf/config.yaml: ``- /schema@_here_: run``).
SCHEMA_GROUP = "schema"
#: ``data._target_`` -> (schema name under schema/data, schema).
DATA = {
    "segnas.data.SyntheticDataModule": ("synthetic", SyntheticSettings),
    "segnas.data.VOCDataModule": ("voc", VOCSettings),
    "segnas.data.CityscapesDataModule": ("cityscapes", CityscapesSettings),
    "segnas.data.ADE20KDataModule": ("ade20k", ADE20KSettings),
    "segnas.data.FolderDataModule": ("folder", FolderSettings),
    "segnas.data.NYUDepthDataModule": ("nyu_depth", NYUDepthSettings),
}
#: ``hardware._target_`` -> (schema name under schema/hardware, schema).
HARDWARE = {
    "segnas.hardware.latency.TorchLatency": ("torch", TorchLatencySettings),
    "segnas.hardware.latency.OnnxRuntimeLatency": ("onnx", OnnxLatencySettings),
    "segnas.quantize.latency.OnnxRuntimeInt8Latency": ("onnx_int8", OnnxInt8LatencySettings),
    "segnas.hardware.gap8.Gap8Latency": ("gap8", Gap8Settings),
}


def register() -> None:
    """Store every schema where the YAML files' defaults lists find them (idempotent)."""
    store = ConfigStore.instance()
    store.store(group=SCHEMA_GROUP, name="run", node=RunSettings)
    for group, table in (("data", DATA), ("hardware", HARDWARE)):
        for name, schema in table.values():
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=schema)
    for name, entry in SEARCHERS.items():
        store.store(group=f"{SCHEMA_GROUP}/searcher", name=name, node=entry.settings)


def load(cfg: DictConfig) -> RunSettings:
    """The run's typed settings: every group with a schema built and checked (types, choices,
    ranges, the rules between keys), the searcher's rules against the shared settings included.
    Errors are :class:`~segnas.errors.ConfigError` naming the key."""
    plain = _resolved(cfg)
    groups = {
        "data": _typed(plain.get("data"), "data", _schema(DATA, plain.get("data"))),
        "hardware": _typed(plain.get("hardware"), "hardware", _schema(HARDWARE, plain.get("hardware"))),
    }
    searcher = plain.get("searcher")
    if searcher is not None:
        groups["searcher"] = _typed(searcher, "searcher", registration(searcher.get("name")).settings)
    top = {key: value for key, value in plain.items() if key not in groups}
    run = _typed(top, "", RunSettings)
    for key, value in groups.items():
        setattr(run, key, value)
    if run.searcher is not None:
        try:
            run.searcher.check_run(run)
        except SettingError as err:
            raise err.under("searcher") from None
    return run


def one_line(err: OmegaConfBaseException) -> str:
    """An omegaconf error as ``<key>=<value>: <what went wrong>``, on one line."""
    message = str(getattr(err, "msg", "") or err).strip().splitlines()
    key = getattr(err, "full_key", None)
    value = getattr(err, "value", None)
    what = message[0] if message else type(err).__name__
    if not key:
        return what
    return f"{key}={shown(value)}: {what}" if value is not None else f"{key}: {what}"


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None


def _schema(table: dict[str, tuple[str, type]], node: Any) -> type | None:
    target = node.get("_target_") if isinstance(node, dict) else None
    return table[target][1] if target in table else None


def _typed(node: Any, prefix: str, schema: type | None) -> Any:
    """``node`` (plain, resolved) merged into ``schema`` and built; unchanged without a schema."""
    if node is None or schema is None:
        return node
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        if key and prefix:
            err.full_key = f"{prefix}.{key}"
        raise ConfigError(one_line(err)) from None
    return to_settings(merged, prefix)
