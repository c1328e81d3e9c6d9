"""The VOC-layout fixture of benchmarks/fixtures.py: read by data=voc, real-looking, deterministic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from segnas.data import VOCDataModule

_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures.py"


def _fixtures():
    spec = importlib.util.spec_from_file_location("segnas_bench_fixtures", _FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_voc_fixture_reads_as_voc_and_looks_real(tmp_path: Path) -> None:
    root = _fixtures().write_voc_fixture(tmp_path / "voc", train=6, val=3, num_classes=9, seed=3)
    dm = VOCDataModule(root=str(root), num_classes=9, crop_size=224, batch_size=2, scale_range=(1, 1))
    train, val = dm.source("train"), dm.source("val")
    assert (len(train), len(val)) == (6, 3)
    shapes = set()
    labels: set[int] = set()
    for source in (train, val):
        for i in range(len(source)):
            sample = source[i]
            h, w = sample["mask"].shape
            assert 150 <= h <= 230 and 170 <= w <= 260 and h != w
            assert sample["image"].shape == (h, w, 3)
            shapes.add((h, w))
            labels |= set(np.unique(sample["mask"]).tolist())
    assert len(shapes) == 9  # every image has its own size
    assert 255 in labels and labels - {255} <= set(range(9)) and len(labels - {255}) >= 5
    name = train.items[0][0]
    with Image.open(root / "SegmentationClass" / f"{name}.png") as mask:
        assert mask.mode == "P"  # a palette PNG, as VOC ships
    with Image.open(root / "JPEGImages" / f"{name}.jpg") as image:
        assert image.format == "JPEG"
    border = np.mean(train[0]["mask"] == 255)
    assert 0.005 < border < 0.2  # a thin ignore band, not whole regions


def test_voc_fixture_is_deterministic_and_kept(tmp_path: Path) -> None:
    fixtures = _fixtures()
    a = fixtures.write_voc_fixture(tmp_path / "a", train=2, val=1, seed=1)
    b = fixtures.write_voc_fixture(tmp_path / "b", train=2, val=1, seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    written = {f: (a / f).stat().st_mtime_ns for f in files}
    fixtures.write_voc_fixture(tmp_path / "a", train=2, val=1, seed=1)  # same stamp: nothing rewritten
    assert {f: (a / f).stat().st_mtime_ns for f in files} == written
