"""Stage-1 inputs: the frozen encoder's features (and the teacher's logits) for a fixed set of
training crops, computed once per search and reused by every child.

Children only differ in their decoder, and stage 1 freezes the encoder, so recomputing the
encoder per child would repeat the same work (the authors precompute 4000 crops). Labels are
kept at the resolution of the finest encoder map (stride 4, nearest), where stage 1 computes its
loss, and the teacher's logits are resized there bilinearly. With the cache off, the same
tensors are computed on the fly from the loader (for timing the cache, and for data too large
to keep).

Everything is computed on the encoder's device. The cache is held where ``store`` says (the
search device by default; host memory when it would not fit: 4000 crops with a 21-class teacher
take about 4.3 GB at the paper's 256 px, 17 GB at 512 px) and every batch is delivered on the
device the cache was built on.

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

from segnas.data.epoch_seeded import at_epoch

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
    encoder: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    teacher: nn.Module | None,
    label_stride: bool = True,
) -> Batch:
    """Encoder maps, targets (at the finest map's size when ``label_stride``) and teacher logits,
    on the encoder's device."""
    device = module_device(encoder)
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    features = [f.detach() for f in encoder(images)]
    size = features[0].shape[-2:] if label_stride else targets.shape[-2:]
    labels = resize_target(targets, size)
    soft = None
    if teacher is not None:
        soft = F.interpolate(teacher(images), size=size, mode="bilinear", align_corners=False)
    return features, labels, soft


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s parameters live (the CPU for a module without any)."""
    return next(module.parameters(), torch.empty(0)).device


@dataclass
class FeatureCache:
    """Precomputed stage-1 batches' parts, one row per crop; batches come out on ``device``
    (None: where the tensors are held)."""

    features: list[torch.Tensor]
    labels: torch.Tensor
    teacher: torch.Tensor | None
    device: torch.device | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
    ) -> Iterator[Batch]:
        """Minibatches in a seeded random order; the last partial batch is dropped when shuffling
        (BatchNorm in the decoder's pooling op needs two or more images)."""
        count = len(self)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        stop = count - count % batch_size if shuffle else count
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            yield (
                [self._out(f[index]) for f in self.features],
                self._out(self.labels[index]),
                None if self.teacher is None else self._out(self.teacher[index]),
            )

    def _out(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.device is None else tensor.to(self.device, non_blocking=True)


def build_cache(
    encoder: nn.Module,
    loader: DataLoader,
    limit: int,
    teacher: nn.Module | None = None,
    label_stride: bool = True,
    target: str = "mask",
    store: torch.device | str | None = None,
) -> FeatureCache:
    """Encode the first ``limit`` images of ``loader`` (cycling through it if it is shorter);
    ``target`` is the batch key kept as labels (``mask`` or ``depth``); ``store``: where the
    cache is held (None: the encoder's device)."""
    parts: list[Batch] = []
    seen = passes = 0
    while seen < limit:
        before = seen
        for batch in at_epoch(loader, passes):
            features, labels, soft = encode(encoder, batch["image"], batch[target], teacher, label_stride)
            if store is not None:
                features, labels = [f.to(store) for f in features], labels.to(store)
                soft = None if soft is None else soft.to(store)
            parts.append((features, labels, soft))
            seen += batch["image"].shape[0]
            if seen >= limit:
                break
        if seen == before:
            raise ValueError("the loader for the feature cache yielded no images")
        passes += 1
    features = [torch.cat([p[0][level] for p in parts])[:limit] for level in range(len(parts[0][0]))]
    labels = torch.cat([p[1] for p in parts])[:limit]
    soft = torch.cat([p[2] for p in parts])[:limit] if teacher is not None else None
    return FeatureCache(features, labels, soft, device=module_device(encoder))


class OnTheFly:
    """The cache's interface without the cache: encodes each batch of ``loader`` when asked."""

    def __init__(
        self, encoder: nn.Module, loader: DataLoader, limit: int, teacher: nn.Module | None = None, target: str = "mask"
    ) -> None:
        self.encoder, self.loader, self.limit, self.teacher = encoder, loader, limit, teacher
        self.target = target

    def __len__(self) -> int:
        return self.limit

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
    ) -> Iterator[Batch]:
        seen = passes = 0
        while seen + batch_size <= self.limit:
            before = seen
            for batch in at_epoch(self.loader, passes):
                yield encode(self.encoder, batch["image"], batch[self.target], self.teacher)
                seen += batch["image"].shape[0]
                if seen + batch_size > self.limit:
                    return
            if seen == before:
                raise ValueError("the stage-1 loader yielded no images")
            passes += 1


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
        encoder(batch["image"].to(module_device(encoder), non_blocking=True))
        used += 1
    for norm in norms:
        norm.momentum = 0.1
    encoder.eval()
    return used
