"""SyncBatchNorm under DDP that keeps timm's fused BatchNorm + activation layers intact.

Lightning's ``sync_batchnorm=True`` (its ``TorchSyncBatchNorm`` plugin) converts with
``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which turns timm's ``BatchNormAct2d`` into a
plain ``SyncBatchNorm``: the activation stays a child but is never called, so every activation of
a timm backbone disappears while the model trains. Its ``revert`` then turns every
``SyncBatchNorm`` into a ``_BatchNormXd``, which would lose the activation again after fit.

:class:`TimmSyncBatchNorm` converts with ``timm.layers.convert_sync_batchnorm`` (timm's
``SyncBatchNormAct`` calls ``drop`` and ``act``) and remembers each converted layer's original
class, so ``revert`` gives back exactly the modules the network was built with, holding the same
parameter and buffer objects.
"""

from __future__ import annotations

from pytorch_lightning.plugins.layer_sync import LayerSync
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: attribute of a converted layer naming the class it had before :meth:`TimmSyncBatchNorm.apply`
ORIGINAL_CLASS = "_unsynced_class"


class TimmSyncBatchNorm(LayerSync):
    """Every BatchNorm of the model synchronised across the process group (as
    ``trainer.sync_batchnorm`` asks), timm's ``BatchNormAct2d`` still applying its activation.
    Has no effect in single-device operation."""

    def apply(self, model: nn.Module) -> nn.Module:
        originals = {
            name: type(module)
            for name, module in model.named_modules()
            if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
        }
        synced = convert_sync_batchnorm(model)
        for name, module in synced.named_modules():
            if name in originals:
                setattr(module, ORIGINAL_CLASS, originals[name])
        return synced

    def revert(self, model: nn.Module) -> nn.Module:
        """Only the layers :meth:`apply` converted go back (a ``SyncBatchNorm`` the network was
        built with stays); children (timm's ``act`` and ``drop``) move over as they are."""
        restored = model
        original = getattr(model, ORIGINAL_CLASS, None)
        if original is not None:
            restored = original(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
            for name in ("weight", "bias"):
                setattr(restored, name, getattr(model, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(restored, name, getattr(model, name))
            restored.training = model.training
            if hasattr(model, "qconfig"):
                restored.qconfig = model.qconfig
        for name, child in model.named_children():
            restored.add_module(name, self.revert(child))
        return restored
