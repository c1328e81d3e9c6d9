"""Stage-1 inputs: the frozen encoder's features (and the teacher's logits) for a fixed set of
training crops, computed once per search and reused by every child.

Children only differ in their decoder, and stage 1 freezes the encoder, so recomputing the
encoder per child would repeat the same work (the authors precompute 4000 crops). Labels are
kept at the resolution of the finest encoder map (stride 4, nearest), where stage 1 computes its
loss, and the teacher's logits are resized there bilinearly. With the cache off, the same
tensors are computed on the fly from the loader (for timing the cache, and for data too large
to keep).

Targets are whichever batch key the task learns: class masks (N, H, W), resized by nearest
neighbour, or depth maps (N, 1, H, W), also nearest so that no invalid pixel (depth 0) is
blended into a valid one; a depth teacher's output is resized like logits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

Batch = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]


def resize_target(target: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """A mask (N, H, W) or depth map (N, 1, H, W) at ``size``, nearest neighbour."""
    if target.shape[-2:] == size:
        return target
    if target.dim() == 3:
        return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return F.interpolate(target, size=size, mode="nearest")


@torch.no_grad()
def encode(
    encoder: nn.Module, images: torch.Tensor, targets: torch.Tensor, teacher: nn.Module | None,
    label_stride: bool = True,
) -> Batch:
    """Encoder maps, targets (at the finest map's size when ``label_stride``) and teacher logits."""
    features = [f.detach() for f in encoder(images)]
    size = features[0].shape[-2:] if label_stride else targets.shape[-2:]
    labels = resize_target(targets, size)
    soft = None
    if teacher is not None:
        soft = F.interpolate(teacher(images), size=size, mode="bilinear", align_corners=False)
    return features, labels, soft


@dataclass
class FeatureCache:
    """Precomputed stage-1 batches' parts, one row per crop."""

    features: list[torch.Tensor]
    labels: torch.Tensor
    teacher: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True) -> Iterator[Batch]:
        """Minibatches in a seeded random order; the last partial batch is dropped when shuffling
        (BatchNorm in the decoder's pooling op needs two or more images)."""
        count = len(self)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        stop = count - count % batch_size if shuffle else count
        for start in range(0, stop, batch_size):
            index = order[start: start + batch_size]
            yield ([f[index] for f in self.features], self.labels[index],
                   None if self.teacher is None else self.teacher[index])


def build_cache(
    encoder: nn.Module, loader: DataLoader, limit: int, teacher: nn.Module | None = None, label_stride: bool = True,
    target: str = "mask",
) -> FeatureCache:
    """Encode the first ``limit`` images of ``loader`` (cycling through it if it is shorter);
    ``target`` is the batch key kept as labels (``mask`` or ``depth``)."""
    parts: list[Batch] = []
    seen = 0
    while seen < limit:
        before = seen
        for batch in loader:
            parts.append(encode(encoder, batch["image"], batch[target], teacher, label_stride))
            seen += batch["image"].shape[0]
            if seen >= limit:
                break
        if seen == before:
            raise ValueError("the loader for the feature cache yielded no images")
    features = [torch.cat([p[0][level] for p in parts])[:limit] for level in range(len(parts[0][0]))]
    labels = torch.cat([p[1] for p in parts])[:limit]
    soft = torch.cat([p[2] for p in parts])[:limit] if teacher is not None else None
    return FeatureCache(features, labels, soft)


class OnTheFly:
    """The cache's interface without the cache: encodes each batch of ``loader`` when asked."""

    def __init__(self, encoder: nn.Module, loader: DataLoader, limit: int, teacher: nn.Module | None = None,
                 target: str = "mask") -> None:
        self.encoder, self.loader, self.limit, self.teacher = encoder, loader, int(limit), teacher
        self.target = target

    def __len__(self) -> int:
        return self.limit

    def batches(self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True) -> Iterator[Batch]:
        seen = 0
        while seen + batch_size <= self.limit:
            before = seen
            for batch in self.loader:
                yield encode(self.encoder, batch["image"], batch[self.target], self.teacher)
                seen += batch["image"].shape[0]
                if seen + batch_size > self.limit:
                    return
            if seen == before:
                raise ValueError("the stage-1 loader yielded no images")


@torch.no_grad()
def calibrate_batchnorm(encoder: nn.Module, loader: DataLoader, batches: int) -> int:
    """Set the encoder's BatchNorm running statistics to the average over ``batches`` batches.

    A randomly initialised encoder carries running statistics of 0 and 1 that match nothing:
    its eval-mode features (what the cache holds) then differ from what the same encoder
    computes in train mode in stage 2, and a decoder trained on one collapses on the other.
    Returns the number of batches used.
    """
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    encoder.train()
    used = 0
    for batch in loader:
        if used >= batches:
            break
        encoder(batch["image"])
        used += 1
    for norm in norms:
        norm.momentum = 0.1
    encoder.eval()
    return used
