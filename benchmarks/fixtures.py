"""Real-format datasets written from segnas's synthetic scenes: deterministic, offline, small.

    python benchmarks/fixtures.py /tmp/voc9 --train 120 --val 40

:func:`write_voc_fixture` writes a folder in the PASCAL VOC 2012 layout that ``data=voc`` reads
(``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` palette masks whose values are class ids
with 255 on object borders, ``ImageSets/Segmentation/{train,val,trainval}.txt``). Its images
have the shapes of a small real dataset rather than of the square synthetic default: each side
drawn independently (heights 150-230, widths 170-260 by default, never square), JPEG quality
75-90 as in VOC, 9 classes, objects tinted towards a colour per class (see ``render_sample``).
Every sample comes from ``render_scene`` with its own generator
``default_rng([seed, split, index])``, so the same arguments always write the same bytes.

Importable by tests and other benchmarks (``benchmarks/`` is not a package: load the file, e.g.
``importlib.util.spec_from_file_location``, or put ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import argparse
import colorsys
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segnas.data.datamodule import default_palette
from segnas.data.synthetic import SceneSpec, render_scene

SPLIT_IDS = {"train": 0, "val": 1}
STAMP = "fixture.json"


def class_colours(num_classes: int) -> np.ndarray:
    """float32 (num_classes, 3): grey for the background, evenly spaced saturated hues for the
    object classes."""
    hues = [colorsys.hsv_to_rgb(k / (num_classes - 1), 0.8, 0.9) for k in range(num_classes - 1)]
    return np.array([(0.5, 0.5, 0.5), *hues], np.float32) * 255


def render_sample(
    seed: int,
    split: str,
    index: int,
    num_classes: int = 9,
    heights: Sequence[int] = (150, 230),
    widths: Sequence[int] = (170, 260),
    border: int = 3,
    tint: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One sample: image uint8 (H, W, 3), mask uint8 (H, W) with 255 borders, JPEG quality.

    ``tint`` blends every object of class k towards a colour of its own (:func:`class_colours`),
    so that, as in photographs, appearance says much about the class: the synthetic scenes alone
    (random colours, class = shape x texture) stay at the all-background prediction for the first
    few hundred from-scratch steps, which is too slow for a CPU benchmark (measured, 9 classes,
    120 images, batch 8, AdamW 2e-3: smp's and segnas's DeepLabV3+ at mIoU 0.10 after 60 steps
    untinted, smp 0.10 with tint 0.5, smp 0.49 after 90 steps with tint 0.8). Distractors
    (label 0) keep their colours, so shape and texture still matter.

    ``border`` is the side of the square structuring element whose morphological gradient marks
    the ignore band around every labelled region (VOC's annotators drew ~5 px at 500 px; 3 gives
    2-3 px at these sizes); 0 leaves no border.
    """
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    height = int(rng.integers(heights[0], heights[1] + 1))
    width = int(rng.integers(widths[0], widths[1] + 1))
    if width == height:  # real photos are rarely square; keep the fixture honest about it
        width += 1 if width < widths[1] else -1
    quality = int(rng.integers(75, 91))
    image, mask, _, _ = render_scene(rng, height, width, SceneSpec(num_classes))
    if tint > 0:
        colours = class_colours(num_classes)[mask]  # (H, W, 3); row 0 (background) unused
        objects = (mask > 0)[..., None]
        blended = (1 - tint) * image + tint * colours
        image = np.where(objects, np.clip(np.round(blended), 0, 255), image).astype(np.uint8)
    if border > 0:
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((border, border), np.uint8)) > 0
        mask = mask.copy()
        mask[edge] = 255
    return image, mask, quality


def write_voc_fixture(
    root: str | Path,
    train: int = 120,
    val: int = 40,
    num_classes: int = 9,
    seed: int = 0,
    heights: Sequence[int] = (150, 230),
    widths: Sequence[int] = (170, 260),
    border: int = 3,
    tint: float = 0.8,
) -> Path:
    """Write (or keep, when ``root`` already holds the same fixture) a VOC-layout dataset.

    Returns ``root``. A ``fixture.json`` stamp records the arguments; a folder with another stamp
    is rewritten. Ids look like VOC's (``2012_000000`` train, ``2012_100000`` val).
    """
    root = Path(root)
    params = {
        "train": train,
        "val": val,
        "num_classes": num_classes,
        "seed": seed,
        "heights": list(heights),
        "widths": list(widths),
        "border": border,
        "tint": tint,
        "version": 1,
    }
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return root
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = default_palette(256).ravel().tolist()
    lists: dict[str, list[str]] = {}
    for split, count in (("train", train), ("val", val)):
        ids = lists[split] = []
        for index in range(count):
            name = f"2012_{SPLIT_IDS[split] * 100000 + index:06d}"
            image, mask, quality = render_sample(seed, split, index, num_classes, heights, widths, border, tint)
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=quality)
            indexed = Image.fromarray(mask)  # uint8 (H, W): mode "L"
            indexed.putpalette(palette)  # -> mode "P": values stay class ids, as in VOC
            indexed.save(root / "SegmentationClass" / f"{name}.png")
            ids.append(name)
    split_dir = root / "ImageSets" / "Segmentation"
    for split, ids in lists.items():
        (split_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (split_dir / "trainval.txt").write_text("".join(f"{i}\n" for i in lists["train"] + lists["val"]))
    stamp.write_text(json.dumps(params))
    return root


def write_untrained_supernet(
    path: Path, num_classes: int = 5, image_size: int = 32, arch: str = "deeplabv3plus-mobilenetv2"
) -> Path:
    """A DeepLabV3+ (preset ``arch``) with BatchNorm statistics from one random batch, saved as a
    ``model.pt``: an FMAS supernet without the minutes of training (for the tests and the FMAS
    throughput benchmark, which time the search, not the supernet)."""
    import torch

    from segnas import spaces
    from segnas.training.checkpoint import save_network

    torch.manual_seed(0)
    genotype = spaces.resolve_arch(arch)
    net = spaces.build(genotype, num_classes)
    with torch.no_grad():
        net.train()
        net(torch.randn(4, 3, image_size, image_size))
    return save_network(path, genotype, num_classes, net.eval())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--val", type=int, default=40)
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tint", type=float, default=0.8)
    args = parser.parse_args(argv)
    print(write_voc_fixture(args.root, args.train, args.val, args.classes, args.seed, tint=args.tint))


if __name__ == "__main__":
    main()
