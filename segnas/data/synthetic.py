"""Synthetic scenes: the offline default dataset, generated in NumPy, no files.

The task is built so that architectures differ on it. An object's class is a (shape, texture)
pair from :data:`CLASS_TABLE`; colours are random per instance and carry no class information.
Neither cue alone identifies a class:

* the table pairs each shape with several textures and each texture with several shapes (once
  there are four or more object classes), and
* the background (label 0) holds *distractors*: a class's shape with a texture it never has in
  the table, or a class's texture on a shape it never has (``plain`` and ``diamond`` are
  distractor-only, so every class has both kinds).

Scenes hold 3-6 objects and 0-2 distractors: with more distractors than that, a network gets no
partial credit for finding objects at all and from-scratch training stalls at the
all-background prediction (measured with DeepLabV3+-MobileNetV2 over 1000 steps).

So a network needs fine texture detail (periods of 7-11 % of the image side) and enough context
to see the whole shape (objects span ~8-45 % of the side). Objects and distractors share one
size/depth/position distribution and are painted far-to-near, so they may occlude each other.

Depth (metres, float32): a ground plane receding to a horizon (far value above it) plus each
instance at a constant depth inversely proportional to its size, standing on the ground.

Sample ``i`` of a split is drawn from ``np.random.default_rng([seed, split_id, i])``, so any
sample can be regenerated alone, in any worker, identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.transforms import RawSample
from segnas.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "cross", "diamond")
TEXTURES = ("stripes", "dots", "checker", "waves", "plain")

# Object classes in the order they are enabled by num_classes. Every prefix of length 4, 8, 12
# and 16 uses each of its shapes with >= 2 textures and each of its textures with >= 2 shapes.
CLASS_TABLE: tuple[tuple[str, str], ...] = (
    ("circle", "stripes"),
    ("square", "dots"),
    ("circle", "dots"),
    ("square", "stripes"),
    ("triangle", "checker"),
    ("cross", "waves"),
    ("triangle", "waves"),
    ("cross", "checker"),
    ("circle", "checker"),
    ("triangle", "stripes"),
    ("square", "waves"),
    ("cross", "dots"),
    ("circle", "waves"),
    ("cross", "stripes"),
    ("square", "checker"),
    ("triangle", "dots"),
)
MAX_CLASSES = len(CLASS_TABLE) + 1

SIZE_RANGE = (0.08, 0.45)  # object bounding-box side, fraction of the image side
OBJECT_COUNT = (3, 7)  # object instances per scene, [low, high)
# background distractors per scene, [low, high): few enough that a network earns partial credit
# for finding objects early (with 2-4 DeepLabV3+ sat at the all-background mIoU for 1000 steps)
DISTRACTOR_COUNT = (0, 3)
PERIOD_RANGE = (0.07, 0.11)  # texture period, fraction of the image side (4.5-7 px at 64 px)
FAR_DEPTH = 50.0
_SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class Instance:
    """One painted object or distractor (label 0), kept for tests and drawings."""

    shape: str
    texture: str
    label: int
    depth: float
    cx: float
    cy: float
    radius: float


class SceneSpec:
    """The class table for ``num_classes`` and, per class, its legal distractors."""

    def __init__(self, num_classes: int) -> None:
        if not isinstance(num_classes, (int, np.integer)) or not 2 <= num_classes <= MAX_CLASSES:
            raise ConfigError(f"data.num_classes for synthetic data must be in [2, {MAX_CLASSES}], got {num_classes}")
        self.table = CLASS_TABLE[: num_classes - 1]
        pairs = set(self.table)
        self.distractors = [
            (
                [(shape, t) for t in TEXTURES if (shape, t) not in pairs],
                [(s, texture) for s in SHAPES if (s, texture) not in pairs],
            )
            for shape, texture in self.table
        ]

    @property
    def class_names(self) -> list[str]:
        return ["background"] + [f"{shape}-{texture}" for shape, texture in self.table]


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (ax <= 0.85 * r) & (ay <= 0.85 * r)
    if shape == "triangle":  # apex up, base at 0.75 r
        return (dy <= 0.75 * r) & (ax * 1.732 <= dy + r)
    if shape == "cross":
        return ((ax <= 0.33 * r) & (ay <= r)) | ((ay <= 0.33 * r) & (ax <= r))
    return ax + ay <= r  # diamond


def _texture(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, period: float) -> np.ndarray:
    """Binary pattern over global pixel coordinates, random orientation and phase."""
    angle = rng.uniform(0.0, np.pi)
    c, s = float(np.cos(angle)), float(np.sin(angle))  # Python floats keep the arrays float32
    u = x * c + y * s + rng.uniform(0.0, period)
    v = y * c - x * s + rng.uniform(0.0, period)
    if kind == "stripes":
        return np.sin(2 * np.pi * u / period) > 0
    if kind == "waves":
        return np.sin(2 * np.pi * (u + 0.5 * period * np.sin(2 * np.pi * v / (3 * period))) / period) > 0
    if kind == "dots":
        return (u % period - period / 2) ** 2 + (v % period - period / 2) ** 2 < (0.3 * period) ** 2
    if kind == "checker":
        return (np.floor(2 * u / period) + np.floor(2 * v / period)) % 2 == 0
    return np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)  # plain


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours with per-channel contrast, so any texture stays visible."""
    first = rng.uniform(0, 255, 3)
    delta = rng.uniform(70, 150, 3)
    second = np.clip(np.where(first > 127, first - delta, first + delta), 0, 255)
    return first.astype(np.float32), second.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, cells: int, shape: tuple[int, ...], height: int, width: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells, *shape)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, -1)


def _background(rng: np.random.Generator, height: int, width: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Low-frequency colour field, mid-frequency shading, sometimes a faint texture."""
    side = min(height, width)
    image = 128 + 60 * _smooth_noise(rng, 3, (3,), height, width)
    image += 15 * _smooth_noise(rng, 8, (1,), height, width)
    if rng.random() < 0.5:
        kind = TEXTURES[rng.integers(4)]
        period = max(2.5, side * rng.uniform(*PERIOD_RANGE))
        image += rng.uniform(8, 20) * (2 * _texture(kind, x, y, rng, period)[..., None] - 1)
    return image


def _ground_depth(height: int, width: int, horizon: float) -> np.ndarray:
    rows = np.arange(height, dtype=np.float32) + 0.5
    below = rows > horizon + 1e-3
    z = np.full(height, FAR_DEPTH, np.float32)
    z[below] = np.clip(height / (rows[below] - horizon), 0.5, FAR_DEPTH)
    return np.repeat(z[:, None], width, axis=1)


def _place(rng: np.random.Generator, height: int, width: int, horizon: float) -> dict[str, float]:
    """Size, depth and centre of one instance: farther is smaller and nearer the horizon."""
    side = min(height, width)
    frac = float(rng.uniform(*SIZE_RANGE))
    radius = frac * side / 2
    depth = 1.0 / frac
    ground_row = horizon + height / depth  # where the ground is as far as the object
    cy = float(np.clip(ground_row - radius + rng.uniform(-0.15, 0.15) * height, 0, height - 1))
    cx = float(rng.uniform(0, width - 1))
    return {"radius": radius, "depth": depth, "cx": cx, "cy": cy}


def render_scene(
    rng: np.random.Generator, height: int, width: int, spec: SceneSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Instance]]:
    """Draw one scene: image uint8 (H, W, 3), mask uint8 (H, W), depth float32 (H, W), instances."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    image = _background(rng, height, width, x, y)
    horizon = height * rng.uniform(0.2, 0.45)
    depth = _ground_depth(height, width, horizon)
    mask = np.zeros((height, width), np.uint8)

    instances = []
    for _ in range(rng.integers(*OBJECT_COUNT)):
        label = int(rng.integers(len(spec.table))) + 1
        shape, texture = spec.table[label - 1]
        instances.append(Instance(shape, texture, label, **_place(rng, height, width, horizon)))
    for _ in range(rng.integers(*DISTRACTOR_COUNT)):
        same_shape, same_texture = spec.distractors[rng.integers(len(spec.table))]
        options = same_shape if rng.random() < 0.5 else same_texture
        shape, texture = options[rng.integers(len(options))]
        instances.append(Instance(shape, texture, 0, **_place(rng, height, width, horizon)))
    instances.sort(key=lambda inst: -inst.depth)

    side = min(height, width)
    for inst in instances:
        x0, x1 = max(0, int(inst.cx - inst.radius)), min(width, int(inst.cx + inst.radius) + 2)
        y0, y1 = max(0, int(inst.cy - inst.radius)), min(height, int(inst.cy + inst.radius) + 2)
        xs, ys = x[:, x0:x1], y[y0:y1]
        inside = _shape_mask(inst.shape, xs - inst.cx, ys - inst.cy, inst.radius)
        period = max(2.5, side * rng.uniform(*PERIOD_RANGE))
        pattern = _texture(inst.texture, xs, ys, rng, period)
        first, second = _colours(rng)
        colour = np.where(pattern[..., None], first, second)
        np.copyto(image[y0:y1, x0:x1], colour, where=inside[..., None])
        np.copyto(mask[y0:y1, x0:x1], inst.label, where=inside)
        np.copyto(depth[y0:y1, x0:x1], np.float32(inst.depth), where=inside)

    image += rng.integers(-6, 7, image.shape, dtype=np.int8)  # sensor noise; int8 draws are cheap
    return np.clip(image, 0, 255, out=image).astype(np.uint8), mask, depth, instances


class SyntheticSource:
    """The samples of one synthetic split, generated on demand and optionally cached.

    With DataLoader workers each worker keeps its own cache (they are separate processes).
    """

    def __init__(self, spec: SceneSpec, split: str, size: int, image_size: int, seed: int, cache: bool) -> None:
        self.spec = spec
        self.split = split
        self.size = size
        self.image_size = image_size
        self.seed = seed
        self._cache: dict[int, RawSample] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> RawSample:
        if not 0 <= index < self.size:
            raise IndexError(index)
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        image, mask, depth, _ = render_scene(rng, self.image_size, self.image_size, self.spec)
        sample = {"image": image, "mask": mask, "depth": depth, "name": f"{self.split}_{index:05d}"}
        if self._cache is not None:
            self._cache[index] = sample
        return sample


class SyntheticDataModule(SegmentationDataModule):
    """Generated shape x texture scenes with depth; see the module docstring.

    Keys beyond the base ones: ``image_size`` (generated side, default ``crop_size``),
    ``train_size``, ``val_size``, ``cache`` (keep generated samples in memory). ``root`` must be
    null: nothing is read from disk. ``scale_range`` defaults to (0.75, 1.5) rather than the
    base (0.5, 2.0): scenes are generated at their evaluation scale, and halving them puts the
    finest textures near 2 px, which slowed learning markedly in a small-CNN trial.
    """

    has_depth = True

    def __init__(
        self,
        num_classes: int = 5,
        crop_size: int = 64,
        batch_size: int = 8,
        image_size: int | None = None,
        train_size: int = 512,
        val_size: int = 128,
        cache: bool = True,
        scale_range: Sequence[float] = (0.75, 1.5),
        root: str | None = None,
        name: str = "synthetic",
        **common: Any,
    ) -> None:
        if root is not None:
            raise ConfigError(f"data.root must be null for synthetic data (nothing is read), got {root!r}")
        self.spec = SceneSpec(num_classes)
        super().__init__(
            num_classes=num_classes,
            crop_size=crop_size,
            batch_size=batch_size,
            scale_range=scale_range,
            class_names=self.spec.class_names,
            name=name,
            **common,
        )
        self.image_size = self.crop_size if image_size is None else int(image_size)
        if self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {image_size!r}")
        self.split_sizes = {"train": int(train_size), "val": int(val_size)}
        if min(self.split_sizes.values()) < 1:
            raise ConfigError(f"data.train_size and data.val_size must be >= 1, got {train_size}, {val_size}")
        self.cache = bool(cache)

    def build_source(self, split: str) -> SyntheticSource:
        return SyntheticSource(self.spec, split, self.split_sizes[split], self.image_size, self.seed, self.cache)
