"""Where a timm backbone is elastic: its stages of droppable residual blocks, and inside each
block the groups of hidden channels that can be sliced without changing the block's interface.

Two families are known (any other backbone has no elastic stage; only its head is elastic):

- EfficientNet family (MobileNetV2/V3, EfficientNet): every ``blocks[s]`` stage made only of
  inverted residuals. A block after the first of a stage adds its input back (equal in/out
  shape), so dropping it leaves an identity. One hidden group per block: the expanded channels,
  written by ``conv_pw``, carried channel by channel through ``bn1``, the depthwise ``conv_dw``
  and ``bn2``, read by ``conv_pwl``.
- Aligned Xception (timm ``xception41/65/71``): the middle flow, the run of blocks whose residual
  is an identity (no shortcut convolution, no ``no_skip``) and that hold no feature tap
  (8 blocks of 728 channels for Xception-41, 16 for Xception-65/71). Two hidden groups per block:
  the outputs of the first and of the second separable convolution, each written by that
  convolution's pointwise conv and its BatchNorm, carried through the next separable
  convolution's depthwise conv and BatchNorm (ReLUs in between act channel by channel), and read
  by the next pointwise conv. The third separable convolution's output is the block's output and
  is added to its input, so it keeps its full width. The pre-activation variants (``xception41p``,
  ``xception65p``) are built from other blocks and are not elastic.

Blocks and their modules are named by attribute path, so slicing can replace a module in place
and the sliced network keeps the state-dict keys of the full one.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.xception_aligned import XceptionModule
from torch import nn

from segnas.errors import GenotypeError


@dataclass(frozen=True)
class HiddenGroup:
    """Channels private to one block, as attribute paths relative to the block."""

    producer: str  # convolution writing the channels (its output channels)
    channelwise: tuple[str, ...]  # BatchNorms and depthwise convolutions carrying them one by one
    consumer: str  # convolution reading them (its input channels)


@dataclass(frozen=True)
class Stage:
    """Consecutive droppable-after-the-first blocks, children ``names`` of ``container``."""

    container: nn.Module
    names: tuple[str, ...]

    def blocks(self) -> list[nn.Module]:
        return [getattr(self.container, name) for name in self.names]


_INVERTED_RESIDUAL = (HiddenGroup("conv_pw", ("bn1", "conv_dw", "bn2"), "conv_pwl"),)
_XCEPTION_MIDDLE = tuple(
    HiddenGroup(
        f"stack.conv{i}.conv_pw",
        (f"stack.conv{i}.bn_pw", f"stack.conv{i + 1}.conv_dw", f"stack.conv{i + 1}.bn_dw"),
        f"stack.conv{i + 1}.conv_pw",
    )
    for i in (1, 2)
)


def _is_inverted_residual(block: nn.Module) -> bool:
    return all(hasattr(block, name) for name in ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl"))


def _is_xception_middle(block: nn.Module) -> bool:
    return isinstance(block, XceptionModule) and block.shortcut is None and not block.no_skip


def _efficientnet_stages(backbone: nn.Module) -> list[Stage]:
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        return []
    return [
        Stage(stage, tuple(stage._modules))
        for stage in blocks
        if isinstance(stage, nn.Sequential) and len(stage) and all(map(_is_inverted_residual, stage))
    ]


def _xception_stages(backbone: nn.Module) -> list[Stage]:
    """Maximal runs of middle-flow blocks among the children of timm's flattened feature net.

    A block holding a feature tap is never part of a run: dropping it would lose a feature map.
    Feature modules are named before flattening (``blocks.19.stack.act3``), children after it
    (``blocks_19``).
    """
    info = getattr(backbone, "feature_info", None)
    tapped = {"_".join(name.split(".")[:2]) for name in info.module_name()} if info is not None else set()
    stages, run = [], []
    for name, child in backbone.named_children():
        if _is_xception_middle(child) and name not in tapped:
            run.append(name)
            continue
        if run:
            stages.append(Stage(backbone, tuple(run)))
        run = []
    if run:
        stages.append(Stage(backbone, tuple(run)))
    return stages


def elastic_stages(backbone: nn.Module) -> list[Stage]:
    """The backbone's elastic stages in forward order (empty for other families, e.g. ResNet)."""
    return _efficientnet_stages(backbone) or _xception_stages(backbone)


def stage_depths(backbone: nn.Module) -> list[int]:
    """Blocks per elastic stage: the full depths a genotype's ``depths`` may shrink."""
    return [len(stage.names) for stage in elastic_stages(backbone)]


def hidden_groups(block: nn.Module) -> tuple[HiddenGroup, ...]:
    """The width-elastic channel groups of a block of an elastic stage."""
    if _is_xception_middle(block):
        return _XCEPTION_MIDDLE
    if not isinstance(getattr(block, "se", nn.Identity()), nn.Identity):
        raise GenotypeError("width slicing of blocks with squeeze-excitation is not supported")
    return _INVERTED_RESIDUAL
