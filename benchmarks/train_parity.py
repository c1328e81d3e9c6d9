"""segnas's ``task=train`` against segmentation_models_pytorch's DeepLabV3+ in a plain loop.

    pip install -e .[bench]        # segmentation_models_pytorch (benchmark only)
    python benchmarks/train_parity.py                       # both datasets, 6 epochs, seeds 0 1
    python benchmarks/train_parity.py --data voc --train 300 --val 80 --epochs 8 --seeds 0 1 2
    python benchmarks/train_parity.py --data voc --no-pipeline --plain smp:whole segnas:whole segnas:segnas-dataset
    python benchmarks/train_parity.py --data voc --root /data/my9 --classes 9   # a real VOC-layout folder
    # segnas as of one commit, not the working tree (the numbers in BENCHMARKS.md say which):
    git archive <commit> | tar -x -C /tmp/segnas_at && PYTHONPATH=/tmp/segnas_at python benchmarks/train_parity.py

Both sides get the same data (``data=synthetic`` at 64 px, and a VOC-layout folder written by
``benchmarks/fixtures.py``: 9 classes, images of ~150-230 x 170-260 px), the same optimiser
(AdamW, lr 2e-3, weight decay 1e-4 on every parameter), a poly schedule (power 0.9) stepped every
optimiser step over epochs x batches-per-epoch, the same batch size (last partial batch dropped),
epochs and horizontal flips (p = 0.5), cross-entropy ignoring 255, and scale_range=[1, 1].

* **segnas** is ``segnas.pipeline.run`` on a Hydra-composed ``task=train
  arch=deeplabv3plus-mobilenetv2`` config (Lightning, segnas's data module and transforms). A
  callback scores the network after every epoch's validation with this file's scorer (eval mode,
  no effect on training) and records segnas's own ``val/mIoU`` of that epoch; at the end
  ``task=eval`` scores the saved ``model.pt`` (segnas's evaluator, whatever protocol it has today).
* **plain loop** runs ``<net>:<data>`` pairs: nets ``smp`` (``smp.DeepLabV3Plus(encoder_name=
  "mobilenet_v2", encoder_weights=None)``), ``segnas`` (``spaces.build`` of the same preset) and
  the variants in ``NETS``; data ``whole`` (whole images, flipped, batch padded bottom/right to a
  multiple of 32 with the mean colour and mask 255) and the crop variants in ``DATA``.

**The scorer** is the same for every row: each val image whole, at full resolution, normalised,
padded bottom/right to a multiple of ``--score-pad`` (32) with the mean colour (0 after
normalisation), the prediction cut back to the image, one confusion matrix over the split
(``numpy.bincount``) against the original mask with 255 ignored, mIoU = NaN-mean of IoU over the
classes present in the ground truth or the prediction.

Prints markdown tables (per epoch, mean ± sample sd over seeds), the command, machine and date, and
writes every number to ``--out``/results.json.
"""

from __future__ import annotations

import segnas  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import write_voc_fixture  # noqa: E402

import segnas.pipeline  # noqa: E402
import segnas.run  # noqa: E402  (registers the run-id resolver the config uses)
from segnas import spaces  # noqa: E402
from segnas.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

# The first resolve_arch of a process builds (randomly initialised, cached) backbones for the
# elastic space's presets and so draws from the global torch RNG after task=train has seeded it:
# the same seed then gives other initial weights in a fresh process than in a warm one. Warm the
# cache once here, so every run of this file (pipeline and plain loop) starts from the same state.
spaces.presets()

MEAN = np.array(IMAGENET_MEAN, np.float32) * 255
STD = np.array(IMAGENET_STD, np.float32) * 255
IGNORE = 255
ARCH = "deeplabv3plus-mobilenetv2"


# --------------------------------------------------------------------------- scoring


def normalise(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W), ImageNet mean/std (what segnas's transforms do)."""
    return ((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def confusion(pred: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    keep = mask != IGNORE
    index = mask[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(matrix: np.ndarray) -> float:
    """NaN-mean IoU over the classes present in the ground truth or the prediction."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else 0.0


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@torch.no_grad()
def score(net: nn.Module, source: Any, num_classes: int, pad_to: int | None = 32) -> float:
    """Whole-image, full-resolution mIoU of ``net`` on the raw samples of ``source``.

    ``pad_to=None`` feeds each image unpadded (segnas's networks accept any size; smp's need a
    multiple of 16)."""
    was_training = net.training
    net.eval()
    total = np.zeros((num_classes, num_classes), np.int64)
    try:
        for i in range(len(source)):
            raw = source[i]
            h, w = raw["mask"].shape
            x = normalise(raw["image"])
            if pad_to:
                canvas = np.zeros((3, _round_up(h, pad_to), _round_up(w, pad_to)), np.float32)
                canvas[:, :h, :w] = x
                x = canvas
            logits = net(torch.from_numpy(x)[None])
            pred = logits[0, :, :h, :w].argmax(0).numpy()
            total += confusion(pred, raw["mask"], num_classes)
    finally:
        net.train(was_training)
    return miou(total)


# --------------------------------------------------------------------------- data for the plain loop


def _collate(items: Sequence[tuple[np.ndarray, np.ndarray]], pad_to: int) -> dict[str, torch.Tensor]:
    """Stack normalised (3, h, w) images and (h, w) masks, padded bottom/right to a common size
    (a multiple of ``pad_to``): image 0 (= the mean colour), mask 255."""
    height = _round_up(max(x.shape[1] for x, _ in items), pad_to)
    width = _round_up(max(x.shape[2] for x, _ in items), pad_to)
    images = np.zeros((len(items), 3, height, width), np.float32)
    masks = np.full((len(items), height, width), IGNORE, np.int64)
    for k, (x, m) in enumerate(items):
        images[k, :, : x.shape[1], : x.shape[2]] = x
        masks[k, : m.shape[0], : m.shape[1]] = m
    return {"image": torch.from_numpy(images), "mask": torch.from_numpy(masks)}


class PlainData:
    """Batches of a raw source for the plain loop: a new seeded shuffle and new flips every epoch,
    last partial batch dropped. ``crop`` set: pad each image to at least ``crop`` (``anchor``
    top_left = bottom/right padding, or center; ``fill`` mean = 0 after normalisation, or black =
    uint8 0) with mask 255, then a random ``crop`` square, as a segnas-style training crop."""

    def __init__(
        self,
        source: Any,
        batch_size: int,
        seed: int,
        crop: int | None = None,
        anchor: str = "top_left",
        fill: str = "mean",
        pad_to: int = 32,
    ) -> None:
        self.source, self.batch_size, self.crop = source, batch_size, crop
        self.anchor, self.fill, self.pad_to = anchor, fill, pad_to
        self.order = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng([seed, 7])

    def __len__(self) -> int:
        return len(self.source) // self.batch_size

    def _sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raw = self.source[index]
        image, mask = raw["image"], raw["mask"]
        if self.crop is not None:
            image, mask = self._pad_crop(image, mask)
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return normalise(np.ascontiguousarray(image)), np.ascontiguousarray(mask)

    def _pad_crop(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = mask.shape
        ph, pw = max(self.crop, h), max(self.crop, w)
        fill = np.round(MEAN).astype(np.uint8) if self.fill == "mean" else np.zeros(3, np.uint8)
        canvas = np.empty((ph, pw, 3), np.uint8)
        canvas[:] = fill
        labels = np.full((ph, pw), IGNORE, np.uint8)
        top, left = ((ph - h) // 2, (pw - w) // 2) if self.anchor == "center" else (0, 0)
        canvas[top : top + h, left : left + w] = image
        labels[top : top + h, left : left + w] = mask
        y = int(self.rng.integers(0, ph - self.crop + 1))
        x = int(self.rng.integers(0, pw - self.crop + 1))
        return canvas[y : y + self.crop, x : x + self.crop], labels[y : y + self.crop, x : x + self.crop]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        perm = torch.randperm(len(self.source), generator=self.order).tolist()
        for b in range(len(self)):
            chunk = perm[b * self.batch_size : (b + 1) * self.batch_size]
            yield _collate([self._sample(i) for i in chunk], self.pad_to)


class SegnasDatasetData:
    """segnas's own training dataset (``datamodule.dataset("train")``: its transform, padding and
    crop) in the plain loop's shuffle order."""

    def __init__(self, datamodule: Any, batch_size: int, seed: int) -> None:
        self.dataset = datamodule.dataset("train")
        self.batch_size = batch_size
        self.order = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        perm = torch.randperm(len(self.dataset), generator=self.order).tolist()
        for b in range(len(self)):
            items = [self.dataset[i] for i in perm[b * self.batch_size : (b + 1) * self.batch_size]]
            yield {"image": torch.stack([s["image"] for s in items]), "mask": torch.stack([s["mask"] for s in items])}


#: data name -> (raw source, datamodule, batch, seed) -> iterable of batches
DATA: dict[str, Callable[..., Any]] = {
    "whole": lambda src, dm, bs, seed, crop: PlainData(src, bs, seed),
    "crop-tl-mean": lambda src, dm, bs, seed, crop: PlainData(src, bs, seed, crop, "top_left", "mean"),
    "crop-tl-black": lambda src, dm, bs, seed, crop: PlainData(src, bs, seed, crop, "top_left", "black"),
    "crop-center-mean": lambda src, dm, bs, seed, crop: PlainData(src, bs, seed, crop, "center", "mean"),
    "crop-center-black": lambda src, dm, bs, seed, crop: PlainData(src, bs, seed, crop, "center", "black"),
    "segnas-dataset": lambda src, dm, bs, seed, crop: SegnasDatasetData(dm, bs, seed),
    # exactly the loader Lightning iterates in task=train (segnas's shuffle generator too)
    "segnas-loader": lambda src, dm, bs, seed, crop: dm.train_dataloader(),
}


# --------------------------------------------------------------------------- networks


def _he_init(module: nn.Module, head: nn.Module | None) -> None:
    """Convolutions He-uniform (fan in, ReLU gain) with zero bias, BatchNorm 1/0, and the
    classifier ``head`` Xavier-uniform: the rules smp applies to its decoder and head."""
    for m in module.modules():
        if m is head:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if head is not None:
        nn.init.xavier_uniform_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def _segnas() -> Callable[[int], nn.Module]:
    return lambda num_classes: spaces.build(spaces.resolve_arch(ARCH), num_classes)


def _segnas_he(num_classes: int) -> nn.Module:
    net = _segnas()(num_classes)
    _he_init(net.aspp, None)
    _he_init(net.decoder, net.decoder.classifier)
    return net


def _segnas_dropout(p: float) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        net = _segnas()(num_classes)
        net.aspp.project[-1].p = p
        return net

    return build


def _smp(**kwargs: Any) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import segmentation_models_pytorch as smp

        return smp.DeepLabV3Plus(encoder_name="mobilenet_v2", encoder_weights=None, classes=num_classes, **kwargs)

    return build


def _smp_default_init(num_classes: int) -> nn.Module:
    """smp's network with PyTorch's default initialisation of its decoder and head (segnas's)."""
    net = _smp()(num_classes)
    for m in [*net.decoder.modules(), *net.segmentation_head.modules()]:
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            m.reset_parameters()
    return net


def _smp_320(num_classes: int) -> nn.Module:
    """smp's network without torchvision MobileNetV2's last 1x1 conv to 1280 channels: ASPP reads
    the 320-channel block, as segnas's (timm features_only) backbone gives it."""
    from segmentation_models_pytorch.base.initialization import initialize_decoder
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP

    net = _smp()(num_classes)
    net.encoder.features[-1] = nn.Identity()
    old = net.decoder.aspp[0]
    net.decoder.aspp[0] = ASPP(
        320, old.project[0].out_channels, (12, 24, 36), separable=True, dropout=old.project[-1].p
    )
    initialize_decoder(net.decoder.aspp[0])
    return net


NETS: dict[str, Callable[[int], nn.Module]] = {
    "smp": _smp(),
    "segnas": _segnas(),
    "segnas-he-init": _segnas_he,
    "segnas-dropout0.5": _segnas_dropout(0.5),
    "smp-default-init": _smp_default_init,
    "smp-rates6": _smp(decoder_atrous_rates=(6, 12, 18)),
    "smp-dense-aspp": _smp(decoder_aspp_separable=False),
    "smp-dropout0.1": _smp(decoder_aspp_dropout=0.1),
    "smp-320": _smp_320,
}


# --------------------------------------------------------------------------- the plain loop


def poly(total: int, power: float = 0.9) -> Callable[[int], float]:
    return lambda step: (1.0 - min(step / max(total, 1), 1.0)) ** power


def train_plain(
    net: nn.Module, data: Any, epochs: int, lr: float, weight_decay: float, on_epoch: Callable[[int, nn.Module], None]
) -> None:
    """AdamW over every parameter, poly per step over epochs x len(data), CE ignoring 255."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, poly(epochs * len(data)))
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
    net.train()
    for epoch in range(1, epochs + 1):
        for batch in data:
            loss = criterion(net(batch["image"]), batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        on_epoch(epoch, net)


# --------------------------------------------------------------------------- segnas's pipeline


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=segnas.run.CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@contextlib.contextmanager
def extra_callbacks(*callbacks: pl.Callback) -> Iterator[None]:
    """Hand ``callbacks`` to every Lightning Trainer built inside (``task=train`` takes none from
    config), whichever segnas module builds it."""
    original = pl.Trainer.__init__

    def init(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("callbacks") or []
        kwargs["callbacks"] = [*([given] if isinstance(given, pl.Callback) else given), *callbacks]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = init
    try:
        yield
    finally:
        pl.Trainer.__init__ = original


class EpochScores(pl.Callback):
    """After each training epoch (its validation has run): this file's score of the network and
    segnas's ``val/mIoU`` of that validation."""

    def __init__(self, val_source: Any, num_classes: int, pad_to: int) -> None:
        self.val_source, self.num_classes, self.pad_to = val_source, num_classes, pad_to
        self.own: list[float] = []
        self.segnas: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/mIoU")
        self.segnas.append(float(value) if value is not None else math.nan)
        self.own.append(score(pl_module.net, self.val_source, self.num_classes, self.pad_to))


def data_overrides(args: argparse.Namespace, dataset: str, root: Path | None) -> list[str]:
    common = [f"data.batch_size={args.batch}", "data.scale_range=[1,1]", f"data.num_workers={args.workers}"]
    if dataset == "synthetic":
        return [
            "data=synthetic",
            f"data.num_classes={args.synthetic_classes}",
            f"data.crop_size={args.synthetic_size}",
            f"data.train_size={args.synthetic_train}",
            f"data.val_size={args.synthetic_val}",
            *common,
        ]
    return ["data=voc", f"data.root={root}", f"data.num_classes={args.classes}", f"data.crop_size={args.crop}", *common]


def run_pipeline(
    args: argparse.Namespace, data: list[str], seed: int, work: Path, val_source: Any, num_classes: int
) -> dict[str, Any]:
    run_dir = work / f"segnas_seed{seed}"
    for folder in (run_dir, work / f"segnas_eval_seed{seed}"):
        shutil.rmtree(folder, ignore_errors=True)  # this file's own earlier run (task=train refuses to overwrite)
    common = [
        *data,
        f"seed={seed}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "train.log_images=0",
        "hardware.runs=2",
        "hardware.warmup=1",
        f"train.optimizer.lr={args.lr}",
        f"train.optimizer.weight_decay={args.wd}",
    ]
    cfg = compose_config(
        "task=train", f"arch={ARCH}", f"run_dir={run_dir}", f"trainer.max_epochs={args.epochs}", *common
    )
    scores = EpochScores(val_source, num_classes, args.score_pad)
    start = time.perf_counter()
    with extra_callbacks(scores):
        summary = segnas.pipeline.run(cfg)
    train_s = time.perf_counter() - start
    evaluated = segnas.pipeline.run(
        compose_config(
            "task=eval", f"checkpoint={summary['model']}", f"run_dir={work / f'segnas_eval_seed{seed}'}", *common
        )
    )
    return {
        "own": scores.own,
        "segnas": scores.segnas,
        "train_val_mIoU": summary.get("val_mIoU"),
        "eval_mIoU": evaluated.get("val_mIoU"),
        "steps": summary.get("steps"),
        "wall_s": round(train_s, 1),
    }


def run_plain(args: argparse.Namespace, spec: str, dm: Any, seed: int, num_classes: int) -> dict[str, Any]:
    net_name, data_name = spec.split(":")
    pl.seed_everything(seed, workers=True, verbose=False)  # as task=train seeds before building
    net = NETS[net_name](num_classes)
    crop = args.crop if dm.name != "synthetic" else args.synthetic_size
    data = DATA[data_name](dm.source("train"), dm, args.batch, seed, crop)
    own: list[float] = []
    start = time.perf_counter()
    train_plain(
        net,
        data,
        args.epochs,
        args.lr,
        args.wd,
        lambda epoch, n: own.append(score(n, dm.source("val"), num_classes, args.score_pad)),
    )
    return {"own": own, "steps": args.epochs * len(data), "wall_s": round(time.perf_counter() - start, 1)}


# --------------------------------------------------------------------------- report


def mean_sd(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def table(results: dict[str, Any], epochs: int) -> str:
    pipe = results.get("pipeline", [])
    plain = results.get("plain", {})
    head = ["epoch"]
    if pipe:
        head += ["segnas task=train [own scorer]", "segnas task=train [segnas scorer]"]
    head += [f"{spec} [own scorer]" for spec in plain]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in range(epochs):
        row = [str(e + 1)]
        if pipe:
            row += [mean_sd([r["own"][e] for r in pipe]), mean_sd([r["segnas"][e] for r in pipe])]
        row += [mean_sd([r["own"][e] for r in runs]) for runs in plain.values()]
        lines.append("| " + " | ".join(row) + " |")
    if pipe:
        row = ["task=eval model.pt", "", mean_sd([r["eval_mIoU"] for r in pipe])] + [""] * len(plain)
        lines.append("| " + " | ".join(row) + " |")
    walls = [f"segnas {statistics.fmean(r['wall_s'] for r in pipe):.0f} s"] if pipe else []
    walls += [f"{spec} {statistics.fmean(r['wall_s'] for r in runs):.0f} s" for spec, runs in plain.items()]
    steps = pipe[0]["steps"] if pipe else next(iter(plain.values()))[0]["steps"]
    return (
        "\n".join(lines)
        + f"\n\nSteps per run: {steps}; mean wall per run (training + per-epoch scoring): "
        + ", ".join(walls)
        + "."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["synthetic", "voc"], choices=["synthetic", "voc"])
    parser.add_argument("--root", help="an existing VOC-layout folder instead of the generated fixture")
    parser.add_argument("--train", type=int, default=120, help="fixture train images")
    parser.add_argument("--val", type=int, default=40, help="fixture val images")
    parser.add_argument("--classes", type=int, default=9, help="VOC-layout classes")
    parser.add_argument("--crop", type=int, default=224, help="segnas crop on VOC-layout data")
    parser.add_argument("--synthetic-classes", type=int, default=5)
    parser.add_argument("--synthetic-size", type=int, default=64)
    parser.add_argument("--synthetic-train", type=int, default=256)
    parser.add_argument("--synthetic-val", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--wd", type=float, default=1e-4)
    parser.add_argument("--workers", type=int, default=0, help="segnas data.num_workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score-pad", type=int, default=32)
    parser.add_argument(
        "--plain",
        nargs="*",
        default=["smp:whole"],
        help=f"plain-loop runs <net>:<data>; nets {sorted(NETS)}, data {sorted(DATA)}",
    )
    parser.add_argument("--no-pipeline", action="store_true", help="skip segnas task=train")
    parser.add_argument("--out", type=Path, default=None, help="folder for runs and results.json")
    args = parser.parse_args(argv)
    for spec in args.plain:
        net_name, _, data_name = spec.partition(":")
        if net_name not in NETS or data_name not in DATA:
            parser.error(f"--plain {spec}: expected <net>:<data> with net in {sorted(NETS)}, data in {sorted(DATA)}")

    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    work = args.out or Path(tempfile.mkdtemp(prefix="train_parity_"))
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    report: dict[str, Any] = {
        "command": "python " + " ".join(map(shlex.quote, [sys.argv[0], *sys.argv[1:]])),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {args.threads} threads",
        "date": started.isoformat(timespec="seconds"),
        "args": vars(args) | {"out": str(work)},
        "datasets": {},
    }
    for dataset in args.data:
        root = None
        if dataset == "voc":
            root = (
                Path(args.root)
                if args.root
                else write_voc_fixture(work / "voc_fixture", args.train, args.val, args.classes)
            )
        data = data_overrides(args, dataset, root)
        results: dict[str, Any] = {"pipeline": [], "plain": {spec: [] for spec in args.plain}}
        for seed in args.seeds:
            # the data module of this seed (synthetic scenes are drawn from data.seed = seed)
            def datamodule() -> Any:
                return instantiate(
                    compose_config(
                        "task=train", f"arch={ARCH}", f"run_dir={work / 'unused'}", f"seed={seed}", *data
                    ).data
                )

            dm = datamodule()
            num_classes = dm.num_classes
            if not args.no_pipeline:
                results["pipeline"].append(
                    run_pipeline(args, data, seed, work / dataset, dm.source("val"), num_classes)
                )
                print(dataset, "segnas", seed, results["pipeline"][-1], flush=True)
            for spec in args.plain:
                results["plain"][spec].append(run_plain(args, spec, datamodule(), seed, num_classes))
                print(dataset, spec, seed, results["plain"][spec][-1], flush=True)
        report["datasets"][dataset] = results
        (work / "results.json").write_text(json.dumps(report, indent=1))
    finished = datetime.datetime.now().astimezone()
    print(
        f"\nCommand: `{report['command']}`  \nMachine: {report['machine']}  \n"
        f"Date: {report['date']} (took {(finished - started).total_seconds() / 60:.1f} min)  \n"
        f"Seeds: {args.seeds}; epochs {args.epochs}; batch {args.batch}; AdamW lr {args.lr} wd {args.wd}; "
        f"poly 0.9 per step; mIoU mean ± sd over seeds.\n"
    )
    for dataset, results in report["datasets"].items():
        size = (
            (
                f"{args.synthetic_train} train / {args.synthetic_val} val, {args.synthetic_size} px, "
                f"{args.synthetic_classes} classes"
            )
            if dataset == "synthetic"
            else (
                f"{args.root or f'fixture {args.train} train / {args.val} val'}, {args.classes} classes, "
                f"crop {args.crop}"
            )
        )
        print(f"### {dataset} ({size})\n\n{table(results, args.epochs)}\n")
    print(f"Results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
