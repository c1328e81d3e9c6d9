"""NYU Depth V2, labeled release: 1449 indoor RGB-D frames in ``nyu_depth_v2_labeled.mat``.

The file is MATLAB v7.3, i.e. HDF5. MATLAB stores arrays column-major, so h5py sees every axis
reversed: ``images`` is (N, 3, W, H) uint8 for MATLAB's (H, W, 3, N) and ``depths`` is (N, W, H)
float32 metres for (H, W, N). Frame ``n`` is therefore ``images[n].transpose(2, 1, 0)`` (H, W, 3)
with depth ``depths[n].T`` (H, W); both are 640 wide and 480 high in the real file.

Splits: the standard 795 train / 654 test frames of the official ``splits.mat``, whose
``trainNdxs`` and ``testNdxs`` are 1-based indices into the 1449 frames; test is served as
``val``. That file is MATLAB v5 (read with SciPy); a v7.3 copy is read with h5py.

Depth only: the 894 raw ``labels`` need a class mapping (e.g. to 40 classes) that the file does
not hold, so ``mask`` is ``ignore_index`` everywhere and ``has_labels`` is False. Frames are
resized by ``image_scale`` as they are read (0.5 by default: 320×240, depth by nearest
neighbour), which keeps CPU runs short; a pixel whose depth is 0 has no measurement and is
invalid. The score is over every valid pixel of the (scaled) frame, not over the Eigen crop
with a 10 m cap that papers use, so numbers here are not directly comparable to theirs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segnas.data.datamodule import SegmentationDataModule
from segnas.data.transforms import RawSample, checked_image_scale, resize_sample
from segnas.errors import ConfigError, DatasetError

DATA_FILE = "nyu_depth_v2_labeled.mat"
SPLIT_FILE = "splits.mat"
#: ``splits.mat`` key of each split (1-based frame indices).
SPLIT_KEYS = {"train": "trainNdxs", "val": "testNdxs"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ConfigError(
            "data=nyu_depth reads a MATLAB v7.3 (HDF5) file and needs h5py: "
            "pip install h5py (or pip install segnas[nyu])"
        ) from err
    return h5py


def open_mat(path: Path) -> Any:
    """The labeled release as an open h5py file, after checking its arrays' shapes."""
    if not path.is_file():
        raise DatasetError(
            f"NYUDv2 file {path} does not exist (set data.root to the folder holding {DATA_FILE}, "
            "or data.file to its name)"
        )
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(
            f"NYUDv2 file {path} cannot be read as MATLAB v7.3 / HDF5 ({err}); is the download complete?"
        ) from err
    missing = [name for name in ("images", "depths") if name not in handle]
    if missing:
        handle.close()
        raise DatasetError(
            f"NYUDv2 file {path} has no dataset(s) {missing}; expected the labeled release "
            "with images (N, 3, W, H) and depths (N, W, H)"
        )
    images, depths = handle["images"], handle["depths"]
    if images.ndim != 4 or images.shape[1] != 3 or depths.shape != (images.shape[0], *images.shape[2:]):
        handle.close()
        raise DatasetError(
            f"NYUDv2 file {path}: images {images.shape} and depths {depths.shape} do not match; "
            "expected images (N, 3, W, H) and depths (N, W, H)"
        )
    return handle


def read_split(path: Path, split: str, count: int) -> list[int]:
    """0-based frame indices of ``split`` from ``splits.mat`` (1-based ``trainNdxs``/``testNdxs``)."""
    key = SPLIT_KEYS[split]
    if not path.is_file():
        raise DatasetError(
            f"NYUDv2 split file {path} does not exist (expected the official {SPLIT_FILE} with "
            "trainNdxs and testNdxs; set data.split_file)"
        )
    from scipy.io import loadmat

    try:
        h5py = _h5py()
        if h5py.is_hdf5(path):  # a v7.3 copy
            with h5py.File(path, "r") as handle:
                values = handle[key][()] if key in handle else None
        else:
            values = loadmat(path, variable_names=[key]).get(key)
    except (OSError, ValueError, NotImplementedError) as err:
        raise DatasetError(f"NYUDv2 split file {path} cannot be read as a .mat file ({err})") from err
    if values is None:
        raise DatasetError(f"NYUDv2 split file {path} has no {key}")
    indices = np.asarray(values).astype(np.int64).ravel()
    if indices.size == 0 or indices.min() < 1 or indices.max() > count:
        raise DatasetError(
            f"NYUDv2 split file {path}: {key} must hold 1-based frame indices in [1, {count}], "
            f"got {indices.size} values in [{indices.min(initial=0)}, {indices.max(initial=0)}]"
        )
    return (indices - 1).tolist()


class NYUDepthSource:
    """The frames of one split, read from the .mat file on access.

    The HDF5 handle is opened lazily in each process (an h5py handle does not survive a fork
    into DataLoader workers) and kept open for the process's later reads.
    """

    def __init__(self, path: Path, indices: Sequence[int], scale: float, ignore_index: int) -> None:
        self.path = path
        self.indices = list(indices)
        self.scale = scale
        self.ignore_index = ignore_index
        self._handle: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open_mat(self.path), os.getpid()
        return self._handle

    def __getitem__(self, index: int) -> RawSample:
        frame = self.indices[index]
        handle = self._file()
        try:
            image = np.ascontiguousarray(handle["images"][frame].transpose(2, 1, 0))
            depth = np.ascontiguousarray(handle["depths"][frame].T).astype(np.float32)
        except (OSError, KeyError, ValueError) as err:
            raise DatasetError(f"NYUDv2 file {self.path}: frame {frame + 1} cannot be read ({err})") from err
        if image.dtype != np.uint8:
            raise DatasetError(f"NYUDv2 file {self.path}: images are {image.dtype}, expected uint8")
        if self.scale != 1.0:
            scaled = resize_sample({"image": image, "depth": depth}, self.scale)
            image, depth = scaled["image"], scaled["depth"]
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        mask = np.full(depth.shape, self.ignore_index, np.uint8)
        return {"image": image, "mask": mask, "depth": depth, "name": f"nyu_{frame + 1:04d}"}


class NYUDepthDataModule(SegmentationDataModule):
    """NYU Depth V2 (labeled release) for ``task_type=depth``; see the module docstring.

    ``root`` holds ``file`` (default ``nyu_depth_v2_labeled.mat``) and ``split_file`` (default
    ``splits.mat``; either may be an absolute path). ``image_scale`` resizes frames on read.
    ``num_classes`` only satisfies the base's label contract: no class is ever labelled.
    """

    has_depth = True
    has_labels = False

    def __init__(
        self,
        root: str | None = None,
        file: str = DATA_FILE,
        split_file: str = SPLIT_FILE,
        image_scale: float = 0.5,
        num_classes: int = 2,
        crop_size: int = 320,
        batch_size: int = 8,
        scale_range: Sequence[float] = (1.0, 1.5),
        name: str = "nyu_depth",
        **common: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            crop_size=crop_size,
            batch_size=batch_size,
            scale_range=scale_range,
            name=name,
            **common,
        )
        if root is None:
            raise DatasetError(f"data.root is not set; point it at the folder holding {DATA_FILE} and {SPLIT_FILE}")
        self.root = Path(root).expanduser()
        self.file = self.root / file
        self.split_file = self.root / split_file
        self.image_scale = checked_image_scale(image_scale)

    def build_source(self, split: str) -> NYUDepthSource:
        with open_mat(self.file) as handle:
            count = int(handle["images"].shape[0])
        return NYUDepthSource(self.file, read_split(self.split_file, split, count), self.image_scale, self.ignore_index)
