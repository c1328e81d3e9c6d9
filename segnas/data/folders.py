"""Real datasets read from a folder the user points ``data.root`` at.

Every layout becomes a :class:`FileSource`: a list of (id, image file, mask file) checked for
existence once at setup, and a 256-entry lookup table from stored mask values to train ids.
Decoding checks what only decoding can see (corrupt files, size mismatch, labels the table does
not allow) and raises ``DatasetError`` naming the file, so a bad file fails the first time it is
loaded without a second pass over the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.transforms import RawSample, checked_image_scale, resize_sample
from segnas.errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_MASK_MODES = ("P", "L", "1", "I", "I;16")
_REJECT = -1  # lookup-table entry of a stored value the format does not allow

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# Cityscapes labelId -> trainId for the 19 evaluated classes; every other labelId (0..33) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES_NUM_LABEL_IDS = 34
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask PNG to its stored values (H, W), never converting colours.

    Palette PNGs (VOC) store class ids as palette indices; converting to RGB would turn them
    into colours, so only single-channel modes are accepted.
    """
    try:
        with Image.open(path) as img:
            if img.mode not in _MASK_MODES:
                raise DatasetError(
                    f"mask {path} has image mode {img.mode}; expected a single-channel PNG "
                    "(palette or greyscale) whose pixel values are class ids"
                )
            values = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err
    return values.astype(np.uint8) if values.dtype == bool else values


def identity_table(num_classes: int, ignore_index: int) -> np.ndarray:
    """Stored values 0..num_classes-1 are the ids, 255 is ignore, anything else is an error."""
    table = np.full(256, _REJECT, np.int16)
    table[:num_classes] = np.arange(num_classes)
    table[255] = ignore_index
    return table


def cityscapes_table(ignore_index: int) -> np.ndarray:
    """Official labelId -> trainId; labelIds without a train id are ignored, unknown ones rejected."""
    table = np.full(256, _REJECT, np.int16)
    table[:CITYSCAPES_NUM_LABEL_IDS] = ignore_index
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id
    return table


def ade20k_table(ignore_index: int) -> np.ndarray:
    """0 ("other") is ignored, 1..150 become 0..149, anything else is rejected."""
    table = np.full(256, _REJECT, np.int16)
    table[0] = ignore_index
    table[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES))
    return table


class FileSource:
    """Image/mask file pairs of one split, decoded and label-mapped on access."""

    def __init__(self, items: Sequence[tuple[str, Path, Path]], table: np.ndarray, allowed: str) -> None:
        """``allowed`` describes the legal stored values, for error messages."""
        self.items = list(items)
        self.table = table
        self.allowed = allowed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> RawSample:
        name, image_path, mask_path = self.items[index]
        image = read_image(image_path)
        stored = read_mask(mask_path)
        if stored.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {mask_path} is {stored.shape[1]}x{stored.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        return {"image": image, "mask": self._map(stored, mask_path), "name": name}

    def _map(self, stored: np.ndarray, path: Path) -> np.ndarray:
        if stored.dtype != np.uint8:
            if stored.min() < 0 or stored.max() > 255:
                raise DatasetError(f"mask {path} has values up to {stored.max()}; expected {self.allowed}")
            stored = stored.astype(np.uint8)
        mapped = self.table[stored]
        rejected = mapped == _REJECT
        if rejected.any():
            bad = np.unique(stored[rejected]).tolist()
            raise DatasetError(f"mask {path} has label values {bad[:10]}; expected {self.allowed}")
        return mapped.astype(np.uint8)


def resolve_root(root: str | None, marker: str, nested: Sequence[str], layout: str) -> Path:
    """Find the dataset folder: ``root`` itself or one of ``nested`` under it holding ``marker``."""
    if root is None:
        raise DatasetError(f"data.root is not set; point it at the folder holding {layout}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"data.root: folder {base} does not exist (expected {layout})")
    for candidate in (base, *(base / n for n in nested)):
        if (candidate / marker).is_dir():
            return candidate
    raise DatasetError(f"data.root: {base} has no {marker}/ folder; expected {layout}")


def read_split_file(path: Path) -> list[str]:
    """Ids listed one per line. A line of paths ("/JPEGImages/x.jpg /Seg.../x.png", as some
    SBD train_aug lists are written) gives the stem of its first path."""
    if not path.is_file():
        raise DatasetError(f"split file {path} does not exist (expected one sample id per line)")
    ids = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if tokens:
            ids.append(Path(tokens[0]).stem if len(tokens) > 1 or "/" in tokens[0] else tokens[0])
    if not ids:
        raise DatasetError(f"split file {path} lists no ids")
    return ids


def check_files(items: Sequence[tuple[str, Path, Path]], listed_in: Path) -> None:
    """Every listed image and mask must exist (cheap: stat only, no decoding)."""
    missing = [path for _, image, mask in items for path in (image, mask) if not path.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} image/mask file(s) for the ids in {listed_in} do not exist, e.g. {missing[0]}"
            + (f" and {missing[1]}" if len(missing) > 1 else "")
        )


def _fixed_classes(num_classes: int, expected: int, dataset: str) -> None:
    if num_classes != expected:
        raise ConfigError(f"data.num_classes must be {expected} for {dataset}, got {num_classes}")


class _FixedClassesDataModule(SegmentationDataModule):
    """A public benchmark whose label set is fixed by its annotation files."""

    CLASS_NAMES: tuple[str, ...] = ()
    DATASET = ""
    CROP_SIZE = 512
    #: The benchmark's own colours, where it has them (else the VOC colour map).
    PALETTE: tuple[tuple[int, int, int], ...] | None = None

    def __init__(
        self,
        root: str | None = None,
        num_classes: int | None = None,
        crop_size: int | None = None,
        batch_size: int = 8,
        name: str | None = None,
        **common: Any,
    ) -> None:
        num_classes = len(self.CLASS_NAMES) if num_classes is None else num_classes
        _fixed_classes(num_classes, len(self.CLASS_NAMES), self.DATASET)
        super().__init__(
            num_classes=num_classes,
            crop_size=self.CROP_SIZE if crop_size is None else crop_size,
            batch_size=batch_size,
            class_names=self.CLASS_NAMES,
            name=name or self.DATASET,
            **common,
        )
        self.root = root
        if self.PALETTE is not None:
            self.palette = np.array(self.PALETTE, np.uint8)


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 (optionally with the SBD augmented list).

    ``root`` holds ``JPEGImages/``, ``<mask_dir>/`` (palette PNGs: values are class ids, 255 is
    the border/ignore) and ``ImageSets/Segmentation/<split>.txt``; ``root`` may also be the
    folder containing ``VOCdevkit/VOC2012``. For SBD: ``train_split: train_aug``,
    ``mask_dir: SegmentationClassAug`` (``mask_dir`` serves both splits; the usual
    SegmentationClassAug holds the val masks too). Other data in the VOC layout may set its own
    ``num_classes`` (and ``class_names``); the VOC names are used only for 21 classes.
    """

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 21,
        crop_size: int = 512,
        batch_size: int = 8,
        train_split: str = "train",
        val_split: str = "val",
        mask_dir: str = "SegmentationClass",
        class_names: Sequence[str] | None = None,
        name: str = "voc",
        **common: Any,
    ) -> None:
        if class_names is None and num_classes == len(VOC_CLASSES):
            class_names = VOC_CLASSES
        super().__init__(
            num_classes=num_classes,
            crop_size=crop_size,
            batch_size=batch_size,
            class_names=class_names,
            name=name,
            **common,
        )
        self.root = root
        self.split_files = {"train": train_split, "val": val_split}
        self.mask_dir = mask_dir

    def build_source(self, split: str) -> FileSource:
        layout = f"VOC2012: JPEGImages/, ImageSets/Segmentation/, {self.mask_dir}/"
        base = resolve_root(self.root, "JPEGImages", ("VOC2012", "VOCdevkit/VOC2012"), layout)
        listed_in = base / "ImageSets" / "Segmentation" / f"{self.split_files[split]}.txt"
        items = [
            (i, base / "JPEGImages" / f"{i}.jpg", base / self.mask_dir / f"{i}.png") for i in read_split_file(listed_in)
        ]
        check_files(items, listed_in)
        allowed = f"class ids 0..{self.num_classes - 1} or 255"
        return FileSource(items, identity_table(self.num_classes, self.ignore_index), allowed)


class ScaledSource:
    """Another source's samples at ``scale`` times their resolution (:func:`resize_sample`)."""

    def __init__(self, source: Any, scale: float) -> None:
        self.source = source
        self.scale = scale

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> RawSample:
        return resize_sample(self.source[index], self.scale)


class CityscapesDataModule(_FixedClassesDataModule):
    """Cityscapes fine annotations, labelIds mapped to the 19 official train ids.

    ``root`` holds ``leftImg8bit/{train,val}/<city>/<x>_leftImg8bit.png`` and
    ``gtFine/{train,val}/<city>/<x>_gtFine_labelIds.png``.

    ``image_scale`` resizes the *training* images as they are read (0.5: the 512×1024 images
    Auto-DeepLab's search crops, paper Sec. 5.1; masks by nearest neighbour), as NYU's
    ``image_scale`` does. Val stays at 1024×2048: a reported score is always against the original
    masks, so to show the network val images at its training scale set ``eval.scale`` to the
    same value (the protocol resizes the image for the network and the logits back).
    """

    CLASS_NAMES = CITYSCAPES_CLASSES
    DATASET = "cityscapes"
    CROP_SIZE = 769
    PALETTE = CITYSCAPES_PALETTE
    #: 1024x2048 images, scored by sliding windows of the crop (e.g. 769, stride 513)
    eval_mode = "slide"

    def __init__(self, root: str | None = None, image_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)
        self.image_scale = checked_image_scale(image_scale)

    def build_source(self, split: str) -> FileSource:
        base = resolve_root(self.root, "leftImg8bit", (), "Cityscapes: leftImg8bit/ and gtFine/")
        image_dir = base / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise DatasetError(f"Cityscapes folder {image_dir} does not exist (expected <city>/*_leftImg8bit.png)")
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetError(f"Cityscapes folder {image_dir} has no <city>/*_leftImg8bit.png images")
        items = []
        for image in images:
            stem = image.name[: -len("_leftImg8bit.png")]
            mask = base / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
            items.append((stem, image, mask))
        check_files(items, image_dir)
        allowed = f"Cityscapes labelIds 0..{CITYSCAPES_NUM_LABEL_IDS - 1}"
        source = FileSource(items, cityscapes_table(self.ignore_index), allowed)
        return ScaledSource(source, self.image_scale) if split == "train" and self.image_scale != 1.0 else source


class ADE20KDataModule(_FixedClassesDataModule):
    """ADE20K SceneParsing (150 classes; stored 0 "other" is ignored, 1..150 become 0..149).

    ``root`` is ``ADEChallengeData2016/`` or the folder containing it, with
    ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``.
    """

    CLASS_NAMES = ADE20K_CLASSES
    DATASET = "ade20k"
    _SPLIT_DIRS = {"train": "training", "val": "validation"}

    def build_source(self, split: str) -> FileSource:
        base = resolve_root(
            self.root, "images", ("ADEChallengeData2016",), "ADEChallengeData2016: images/ and annotations/"
        )
        image_dir = base / "images" / self._SPLIT_DIRS[split]
        if not image_dir.is_dir():
            raise DatasetError(f"ADE20K folder {image_dir} does not exist (expected *.jpg images)")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise DatasetError(f"ADE20K folder {image_dir} has no *.jpg images")
        mask_dir = base / "annotations" / self._SPLIT_DIRS[split]
        items = [(image.stem, image, mask_dir / f"{image.stem}.png") for image in images]
        check_files(items, image_dir)
        allowed = f"0 (other) or class ids 1..{len(ADE20K_CLASSES)}"
        return FileSource(items, ade20k_table(self.ignore_index), allowed)


class FolderDataModule(SegmentationDataModule):
    """A user's own data: ``root/<image_dir>/<id>.<ext>`` (any common image extension, matched by
    stem), ``root/<mask_dir>/<id>.png`` (single-channel, values = class ids, 255 = ignore) and
    ``root/<split_dir>/{train,val}.txt`` (one id per line)."""

    def __init__(
        self,
        num_classes: int,
        root: str | None = None,
        crop_size: int = 512,
        batch_size: int = 8,
        image_dir: str = "images",
        mask_dir: str = "masks",
        split_dir: str = "splits",
        class_names: Sequence[str] | None = None,
        name: str = "folder",
        **common: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            crop_size=crop_size,
            batch_size=batch_size,
            class_names=class_names,
            name=name,
            **common,
        )
        self.root = root
        self.dirs = {"image": image_dir, "mask": mask_dir, "split": split_dir}

    def _images_by_stem(self, image_dir: Path) -> dict[str, list[Path]]:
        if not image_dir.is_dir():
            raise DatasetError(f"image folder {image_dir} does not exist (set data.image_dir)")
        found: dict[str, list[Path]] = {}
        for path in sorted(image_dir.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                found.setdefault(path.stem, []).append(path)
        return found

    def build_source(self, split: str) -> FileSource:
        layout = f"{self.dirs['image']}/, {self.dirs['mask']}/ and {self.dirs['split']}/{{train,val}}.txt"
        base = resolve_root(self.root, self.dirs["split"], (), layout)
        listed_in = base / self.dirs["split"] / f"{split}.txt"
        ids = read_split_file(listed_in)
        image_dir = base / self.dirs["image"]
        by_stem = self._images_by_stem(image_dir)
        items = []
        for i in ids:
            candidates = by_stem.get(i, [image_dir / f"{i}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}>"])
            if len(candidates) > 1:
                names = ", ".join(p.name for p in candidates)
                raise DatasetError(f"id {i!r} in {listed_in} matches several images ({names}) in {image_dir}")
            items.append((i, candidates[0], base / self.dirs["mask"] / f"{i}.png"))
        check_files(items, listed_in)
        allowed = f"class ids 0..{self.num_classes - 1} or 255"
        return FileSource(items, identity_table(self.num_classes, self.ignore_index), allowed)
