"""SyncBatchNorm under DDP: the layer sync that Lightning applies for ``trainer.sync_batchnorm``
keeps every timm activation and reverts to the original modules. SyncBatchNorm cannot train on
CPU, so the conversion is checked in eval mode (the supernet's own synchronisation of its
α-weighted BatchNorms is in test_supernet_sync.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from pytorch_lightning.plugins.layer_sync import LayerSync
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from segnas import spaces
from segnas.data import SyntheticDataModule
from segnas.spaces.autodeeplab.supernet import AutoDeepLabSupernet
from segnas.training.layer_sync import TimmSyncBatchNorm
from segnas.training.trainer import build_trainer

#: one network per space and per kind of timm block: BatchNormAct2d (MobileNetV2), ConvNormAct
#: (Xception), auxcell decoders, the released Auto-DeepLab-S, an elastic supernet
PRESETS = [
    "deeplabv3plus-mobilenetv2",
    "deeplabv3plus-xception",
    "auxcell-arch0",
    "autodeeplab-s",
    "elastic-deeplabv3plus-mobilenetv2",
]


def _network(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "supernet":
        net = AutoDeepLabSupernet(5, layers=2, filter_multiplier=2, blocks=2, stem_channels=(4, 8), aspp_channels=4)
    else:
        net = spaces.build(spaces.resolve_arch(name), 5)
    with torch.no_grad():  # running statistics that matter in eval mode
        for module in net.modules():
            if isinstance(module, _BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _calls(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, Counter]:
    """Output and how often each module other than a BatchNorm (whose class the sync changes)
    was called, by module name."""
    names = {module: name for name, module in net.named_modules()}
    calls: Counter = Counter()
    handles = [
        m.register_forward_hook(lambda module, *_: calls.update([names[module]]))
        for m in names
        if not isinstance(m, _BatchNorm)
    ]
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, calls


@pytest.mark.parametrize("name", [*PRESETS, "supernet"])
def test_layer_sync_keeps_activations_and_reverts_to_the_original_modules(name: str) -> None:
    plugin: LayerSync = TimmSyncBatchNorm()
    net = _network(name)
    x = torch.randn(2, 3, 64, 64)
    classes = {n: type(m) for n, m in net.named_modules()}
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    reference, calls = _calls(net, x)
    activations = sum(count for n, count in calls.items() if isinstance(net.get_submodule(n), (nn.ReLU, nn.ReLU6)))
    assert activations > 0

    synced = plugin.apply(net)
    norms = [m for m in synced.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    out, synced_calls = _calls(synced, x)
    assert synced_calls == calls  # every activation (and every other module) still runs
    assert torch.equal(out, reference)

    restored = plugin.revert(synced)
    assert {n: type(m) for n, m in restored.named_modules()} == classes
    restored_tensors = {**dict(restored.named_parameters()), **dict(restored.named_buffers())}
    assert restored_tensors.keys() == tensors.keys()
    assert all(restored_tensors[k] is v for k, v in tensors.items())  # the same objects, not copies
    out, restored_calls = _calls(restored, x)
    assert restored_calls == calls
    assert torch.equal(out, reference)


def test_revert_restores_batchnorm_act_with_its_act_and_drop() -> None:
    norm = BatchNormAct2d(4, act_layer=nn.SiLU, drop_layer=nn.Dropout).eval()
    act, drop = norm.act, norm.drop
    plugin = TimmSyncBatchNorm()
    restored = plugin.revert(plugin.apply(nn.Sequential(norm)))[0]
    assert type(restored) is BatchNormAct2d and restored.act is act and restored.drop is drop
    assert not restored.training
    user_synced = nn.Sequential(nn.SyncBatchNorm(4))  # built synced by its author: not ours to revert
    assert type(plugin.revert(user_synced)[0]) is nn.SyncBatchNorm


def test_trainer_ddp_uses_the_timm_layer_sync(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true")
    assert cfg.trainer.sync_batchnorm
    datamodule = SyntheticDataModule(crop_size=32, train_size=4, val_size=2, batch_size=2, num_classes=5)
    trainer = build_trainer(cfg, tmp_path, None, datamodule)
    assert isinstance(trainer.strategy._layer_sync, TimmSyncBatchNorm)
    plain = build_trainer(
        make_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"),
        tmp_path,
        None,
        datamodule,
    )
    assert plain.strategy._layer_sync is None
