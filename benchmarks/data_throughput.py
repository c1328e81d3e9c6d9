"""Train-loader throughput (images/s) of a segnas dataset: decode or generate + augment + collate.

    python benchmarks/data_throughput.py --data synthetic --workers 2 --batch 8 --crop 256
    python benchmarks/data_throughput.py --data voc --make-fixture 200 --workers 2 --crop 256
    python benchmarks/data_throughput.py --data voc --root /data/VOC2012 --workers 8

Prints one JSON line. Each repeat takes one warm-up batch (worker start-up, first imports) and
then times ``--batches`` batches; the reported figure is the median over ``--repeats``.
``--make-fixture N`` writes N 500x375 JPEG + palette-PNG pairs (synthetic scenes, VOC-like
255 borders) in the VOC layout to a temporary folder, so VOC decoding is measurable without
the real data set. Synthetic data is measured without its in-memory cache unless ``--cache``
is given, i.e. the cost of a first epoch.
"""

from __future__ import annotations

import segnas  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from segnas.data import SegmentationDataModule, SyntheticDataModule, VOCDataModule
from segnas.data.datamodule import default_palette
from segnas.data.synthetic import SceneSpec, render_scene


def make_voc_fixture(root: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` VOC-style samples (JPEG + palette PNG with 255 object borders)."""
    spec = SceneSpec(5)
    palette = default_palette(256).ravel().tolist()
    ids = [f"2012_{i:06d}" for i in range(count)]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(ids):
        image, mask, _, _ = render_scene(np.random.default_rng([seed, i]), 375, 500, spec)
        border = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        mask[border] = 255
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        indexed = Image.fromarray(mask, mode="L")
        indexed.putpalette(palette)
        indexed.save(root / "SegmentationClass" / f"{name}.png")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[: max(1, count // 10)]) + "\n")
    return root


def endless(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """Batches forever, starting a new epoch when one ends (small folders)."""
    while True:
        yield from loader


def measure(dm: SegmentationDataModule, batches: int, repeats: int) -> list[float]:
    loader = dm.train_dataloader()
    rates = []
    stream = endless(loader)
    for _ in range(repeats):
        next(stream)
        start = time.perf_counter()
        images = sum(len(next(stream)["name"]) for _ in range(batches))
        rates.append(images / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["synthetic", "voc"], default="synthetic")
    parser.add_argument("--root", help="VOC2012 folder (voc without --make-fixture)")
    parser.add_argument("--make-fixture", type=int, metavar="N", help="write N VOC-layout samples to a temp dir")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", action="store_true", help="synthetic: keep generated samples in memory")
    args = parser.parse_args(argv)

    common = {"crop_size": args.crop, "batch_size": args.batch, "num_workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        if args.data == "synthetic":
            size = (args.batches * args.repeats + args.repeats + 1) * args.batch
            dm = SyntheticDataModule(train_size=size, val_size=args.batch, cache=args.cache, **common)
            source = f"generated {args.crop}x{args.crop}, cache={args.cache}"
        else:
            if args.make_fixture:
                root = make_voc_fixture(Path(tmp), args.make_fixture)
                source = f"fixture of {args.make_fixture} 500x375 JPEG + palette PNG"
            elif args.root:
                root, source = Path(args.root), args.root
            else:
                parser.error("--data voc needs --root or --make-fixture N")
            dm = VOCDataModule(root=str(root), **common)
        rates = measure(dm, args.batches, args.repeats)
    print(
        json.dumps(
            {
                "data": args.data,
                "source": source,
                "workers": args.workers,
                "batch": args.batch,
                "crop": args.crop,
                "batches": args.batches,
                "repeats": args.repeats,
                "images_per_s": round(statistics.median(rates), 1),
                "images_per_s_each": [round(r, 1) for r in rates],
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
