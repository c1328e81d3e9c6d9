"""``searcher=fmas``: the keys of conf/searcher/fmas.yaml, checked before the supernet is
obtained (training it takes minutes), and the names the FMAS search itself uses for them.

What needs the supernet (a space with no choices, a checkpoint of another space) or the data
(its class count against the supernet's) is still checked once they are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segnas.config_keys import Keys

OBJECTIVES = ("miou", "params", "macs", "latency")
#: Constraint config keys and the record field each limits.
CONSTRAINTS = {"max_params": "params", "max_macs": "macs", "max_latency_ms": "latency_ms"}
#: ``searcher.channel_order``: keep the first hidden channels as trained, or sort them by L1 norm first.
CHANNEL_ORDERS = ("first", "l1")
#: ``searcher.algorithm``: NSGA-II, or uniform proposals (FMAS's random-search baseline).
ALGORITHMS = ("nsga2", "random")


def ordered_objectives(objectives: Sequence[str]) -> list[str]:
    """The objectives with miou first: the search minimises 1 - mIoU against the costs after it."""
    return ["miou", *[str(o) for o in objectives if o != "miou"]]


def check(cfg: DictConfig, keys: Keys) -> None:
    """Supernet, space of sub-networks, scoring, objectives and limits, NSGA-II, fine-tuning."""
    supernet = keys.path("supernet", "checkpoint of a task=train run (.ckpt, model.pt or run dir)")
    if not isinstance(keys.raw("supernet_arch"), str) or not keys.raw("supernet_arch"):
        keys.fail("supernet_arch", "a DeepLabV3+ preset (e.g. deeplabv3plus-mobilenetv2) or a genotype file")
    trained_before = Path(str(cfg.get("run_dir"))) / "supernet" / "model.pt"  # resuming a run that trained it
    if supernet is None and not trained_before.is_file():
        keys.integer("supernet_epochs", why=f"with {keys.name('supernet')}=null the supernet is trained here; "
                                            f"or give {keys.name('supernet')}=<checkpoint>")
    else:
        keys.integer("supernet_epochs", low=0)
    keys.weights("backbone_weights")
    keys.choice("channel_order", CHANNEL_ORDERS)
    keys.fractions("width_ratios")
    keys.fractions("head_ratios")
    keys.integer("min_depth")
    keys.integer("val_images")
    keys.integer("calib_images")
    keys.flag("recalibrate_bn")
    keys.integer("score_batch_size", null=True)
    keys.device("device")
    objectives = keys.names("objectives", OBJECTIVES)
    if "miou" not in objectives or len(objectives) < 2:
        keys.fail("objectives", "miou and at least one of params, macs, latency, each once")
    limits = keys.mapping("constraints", CONSTRAINTS)
    for limit in limits:
        keys.number(f"constraints.{limit}", above=0, null=True)
    if ("latency" in objectives or keys.raw("constraints.max_latency_ms") is not None) \
            and OmegaConf.select(cfg, "hardware") is None:
        keys.fail("objectives", "no latency objective or limit (searcher.constraints.max_latency_ms) without a "
                                "hardware target: pick hardware=cpu, onnx_cpu or gap8")
    keys.size("input_size", null=True)
    keys.number("hv_reference", above=1)
    algorithm = keys.choice("algorithm", ALGORITHMS)
    pop_size = keys.integer("pop_size", low=2 if algorithm == "nsga2" else 1,
                            why="NSGA-II needs two parents" if algorithm == "nsga2" else "")
    keys.integer("generations")
    keys.integer("seed", low=None)
    keys.number("crossover_prob", low=0, high=1)
    keys.number("mutation_prob", low=0, high=1, null=True)
    keys.integer("top_k", high=pop_size, null=True,
                 why=f"front members handed on, at most {keys.name('pop_size')}={pop_size}; null: the whole front")
    keys.integer("retrain_epochs", low=0)
    keys.number("finetune.lr_scale", above=0)
    keys.choice("finetune.scheduler", ("poly", "cosine", "constant"))
    keys.number("finetune.warmup_fraction", low=0, below=1)
    keys.flag("finetune.keep_best")
