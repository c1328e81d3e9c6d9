"""``searcher=autodeeplab``: the keys of conf/searcher/autodeeplab.yaml, checked before the search."""

from __future__ import annotations

from omegaconf import DictConfig

from segnas.config_keys import Keys

#: The final network's labels (``searcher.network``) besides the decoded cell and path; the
#: Auto-DeepLab space checks them again when it builds the network.
NETWORK_LABELS = ("filter_multiplier", "aspp_channels", "decoder_channels", "low_level_channels",
                  "drop_path_keep_prob")


def check(cfg: DictConfig, keys: Keys) -> None:
    """Supernet sizes, schedule, optimisers and the final network's labels."""
    for key in ("layers", "blocks"):
        keys.integer(key)
    keys.integer("aspp_channels", null=True)
    multiplier = keys.integer("filter_multiplier")
    epochs = keys.integer("epochs")
    keys.integer("warmup_epochs", low=0, high=epochs - 1,
                 why=f"below {keys.name('epochs')}={epochs}, or no architecture step would run")
    keys.integer("batches_per_epoch", null=True)
    keys.integer("val_images", null=True)
    keys.partial("weight_optimizer")
    keys.number("weight_min_lr", low=0)
    keys.partial("arch_optimizer")
    keys.flag("recompute")
    keys.flag("checkpoint_cells")
    keys.flag("channels_last")
    if multiplier % keys.integer("partial_channels"):
        keys.fail("partial_channels", f"a divisor of {keys.name('filter_multiplier')}={multiplier}")
    for label in keys.mapping("network", NETWORK_LABELS):
        if label == "drop_path_keep_prob":
            keys.number(f"network.{label}", above=0, high=1)
        else:
            keys.integer(f"network.{label}")
    keys.integer("retrain_epochs", low=0)
