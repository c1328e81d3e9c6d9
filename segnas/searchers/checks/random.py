"""``searcher=random``: its own keys (conf/searcher/random.yaml), then the matching searcher's
settings under ``searcher.<space>`` exactly as the baseline will run them, by that searcher's
validator, so an error names e.g. ``searcher.fmas.pop_size``."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from segnas.config_keys import Keys
from segnas.searchers.checks import autodeeplab, auxcell, fmas

SPACES = ("autodeeplab", "auxcell", "fmas")
#: The one setting that turns the matching searcher into random search.
UNIFORM = {"auxcell": {"controller": {"algorithm": "uniform"}}, "fmas": {"algorithm": "random"}}
_VALIDATORS = {"autodeeplab": autodeeplab.check, "auxcell": auxcell.check, "fmas": fmas.check}


def matching(cfg: DictConfig) -> DictConfig:
    """The run's config with ``searcher`` replaced by the matching searcher's (random) settings."""
    space = cfg.searcher.space
    inner = OmegaConf.to_container(cfg, resolve=True)
    inner["searcher"] = OmegaConf.to_container(OmegaConf.merge(cfg.searcher[space], UNIFORM.get(space, {})),
                                               resolve=True)
    return OmegaConf.create(inner)


def check(cfg: DictConfig, keys: Keys) -> None:
    """The space, samples and top_k (Auto-DeepLab space), then the matching searcher's settings."""
    space = keys.choice("space", SPACES)
    samples = keys.integer("samples")
    keys.integer("top_k", high=samples, why=f"at most {keys.name('samples')}={samples}")
    keys.integer("retrain_epochs", low=0)
    if keys.raw(space) is None or not OmegaConf.is_dict(keys.raw(space)):
        keys.fail(space, f"the {space} searcher's settings, composed there by conf/searcher/random.yaml")
    inner = matching(cfg)
    _VALIDATORS[space](inner, Keys(inner.searcher, keys.name(space)))
