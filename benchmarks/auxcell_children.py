"""Children per hour of the auxcell search, from the measured cost of each part of a child.

    python benchmarks/auxcell_children.py --scale default        # the default search's shapes
    python benchmarks/auxcell_children.py --scale voc --children 3 # experiment=auxcell_voc_sbd's

A child's time is stage 1 (``epochs × num_crops // batch`` decoder steps on cached features),
scoring on the held-out features, and, for the children early stopping lets through, stage 2
(encoder + decoder steps on images) and scoring on the held-out images. Each part is timed here
with the search's own functions (``train_stage1``, ``train_stage2``, ``score_*``) on random
tensors of the configuration's shapes, for ``--children`` decoders drawn uniformly from the
space (their cost varies a lot: a cell on the stride-4 map costs 64× one on the stride-32 map),
and multiplied out to the configuration's step counts. Random inputs change nothing about the
cost of a step. At the VOC scale a whole child takes hours on a CPU, which is why its parts are
timed rather than the child: the script prints the measured step times and the multiplication.
The feature cache (built once per search) is timed per crop and reported apart.

Prints one JSON line per child and a summary line with the median child and children/hour.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import torch
from machine import gemm_rate  # benchmarks/machine.py, next to this script
from torch.utils.data import DataLoader

from segnas.hardware.costs import count_training_flops
from segnas.nn import build_backbone
from segnas.searchers.auxcell import decisions
from segnas.searchers.auxcell.child import (
    Stage,
    score_features,
    score_images,
    segmentation_objective,
    train_stage1,
    train_stage2,
)
from segnas.searchers.auxcell.features import FeatureCache
from segnas.searchers.auxcell.module import SPACE
from segnas.spaces.auxcell import ENCODER_OUT_INDICES, ENCODER_STRIDE, build_decoder

#: Shapes and step counts: the searcher's defaults on synthetic data (``searcher=auxcell``), and
#: ``experiment=auxcell_voc_sbd`` (VOC 2012 + SBD train_aug, 10,582 images, 10 % held out).
SCALES = {
    "default": dict(
        crop=64,
        classes=21,
        num_crops=64,
        stage1_batch=8,
        stage1_epochs=5,
        stage2_batch=8,
        stage2_epochs=1,
        stage2_steps=8,
        holdout=51,
    ),
    "voc": dict(
        crop=512,
        classes=21,
        num_crops=4000,
        stage1_batch=64,
        stage1_epochs=5,
        stage2_batch=16,
        stage2_epochs=1,
        stage2_steps=10582 * 9 // 10 // 16,
        holdout=1058,
    ),
}


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def per_step(run, steps: int) -> float:
    """Seconds per step of ``run(steps)``, after one warm-up step."""
    run(1)
    return timed(lambda: run(steps)) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--children", type=int, default=5, help="decoders drawn from the space and timed")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per part (after one warm-up)")
    parser.add_argument(
        "--pass-rate",
        type=float,
        default=0.5,
        help="fraction of children early stopping lets into stage 2 (0.5: the default run's)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = SCALES[args.scale]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    objective = segmentation_objective(shape["classes"])
    encoder = build_backbone("mobilenetv2_100", output_stride=ENCODER_STRIDE, out_indices=ENCODER_OUT_INDICES)
    encoder.to(device).eval()
    crop, classes = shape["crop"], shape["classes"]

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, 3, crop, crop, device=device)

    with torch.no_grad():
        probe = encoder(images(2))
        cache_per_crop = (
            per_step(lambda n: [encoder(images(shape["stage1_batch"])) for _ in range(n)], args.steps)
            / shape["stage1_batch"]
        )

    def features(n: int) -> FeatureCache:
        return FeatureCache(
            [torch.randn(n, *f.shape[1:], device=device) for f in probe],
            torch.randint(0, classes, (n, *probe[0].shape[-2:]), device=device),
            None,
        )

    batch1, batch2 = shape["stage1_batch"], shape["stage2_batch"]
    stage1_cache = features(batch1 * args.steps)
    holdout_cache = FeatureCache(
        stage1_cache.features, torch.randint(0, classes, (batch1 * args.steps, crop, crop), device=device), None
    )
    stage2_data = [
        {"image": images(batch2), "mask": torch.randint(0, classes, (batch2, crop, crop), device=device)}
        for _ in range(args.steps)
    ]
    holdout_images = DataLoader(
        [{"image": images(1)[0], "mask": torch.randint(0, classes, (crop, crop))} for _ in range(8)], batch_size=8
    )
    stage1_steps = shape["stage1_epochs"] * (shape["num_crops"] // batch1)
    stage2_steps = shape["stage2_epochs"] * shape["stage2_steps"]
    sampler = torch.Generator().manual_seed(args.seed)
    rate = gemm_rate(device)
    children = []
    for index in range(args.children):
        actions = [int(torch.randint(n, (1,), generator=sampler)) for n in decisions.choices()]
        arch = SPACE.validate(decisions.to_arch(actions, backbone="mobilenetv2_100", width=48, sep_repeats=1))
        decoder = build_decoder(arch, encoder.feature_info.channels(), classes, aux_heads=True).to(device)
        generator = torch.Generator().manual_seed(index)
        t1 = per_step(
            lambda n: train_stage1(
                decoder,
                stage1_cache,
                Stage(epochs=1, batch_size=batch1, max_batches=n),
                0.15,
                0.0,
                generator,
                objective,
            ),
            args.steps,
        )
        s1 = timed(lambda: score_features(decoder, holdout_cache, objective)) / len(holdout_cache)
        stage2 = Stage(epochs=1, batch_size=batch2, polyak=0.99)
        t2 = per_step(lambda n: train_stage2(encoder, decoder, stage2_data[:n], stage2, 0.15, objective), args.steps)
        s2 = timed(lambda: score_images(encoder, decoder, holdout_images, objective)) / 8
        # each step's counted FLOPs against this run's GEMM rate
        flops1 = count_training_flops(
            lambda: train_stage1(
                decoder,
                stage1_cache,
                Stage(epochs=1, batch_size=batch1, max_batches=1),
                0.15,
                0.0,
                generator,
                objective,
            )
        )
        flops2 = count_training_flops(lambda: train_stage2(encoder, decoder, stage2_data[:1], stage2, 0.15, objective))
        encoder.eval()
        first = stage1_steps * t1 + shape["holdout"] * s1
        second = stage2_steps * t2 + shape["holdout"] * s2
        child = {
            "child": index,
            "cell": arch["cell"],
            "connections": arch["connections"],
            "stage1_step_s": round(t1, 4),
            "stage2_step_s": round(t2, 4),
            "score_features_per_image_s": round(s1, 5),
            "score_images_per_image_s": round(s2, 5),
            "stage1_step_gflop": round(flops1 / 1e9, 3),
            "stage1_utilisation": round(flops1 / t1 / 1e9 / rate, 3),
            "stage2_step_gflop": round(flops2 / 1e9, 3),
            "stage2_utilisation": round(flops2 / t2 / 1e9 / rate, 3),
            "stage1_s": round(first, 1),
            "stage2_s": round(second, 1),
            "child_s": round(first + args.pass_rate * second, 1),
        }
        children.append(child)
        print(json.dumps(child), flush=True)
    median = statistics.median(c["child_s"] for c in children)
    print(
        json.dumps(
            {
                "benchmark": "auxcell_children",
                "scale": args.scale,
                **shape,
                "device": args.device,
                "threads": args.threads,
                "machine": platform.processor() or platform.machine(),
                "children_timed": args.children,
                "stage1_steps": stage1_steps,
                "stage2_steps": stage2_steps,
                "pass_rate": args.pass_rate,
                "median_child_s": round(median, 1),
                "children_per_hour": round(3600 / median, 3),
                "cache_per_crop_s": round(cache_per_crop, 4),
                "cache_s": round(cache_per_crop * shape["num_crops"], 1),
                "gemm_gflops": round(rate, 2),
                "stage1_utilisation_median": statistics.median(c["stage1_utilisation"] for c in children),
                "stage2_utilisation_median": statistics.median(c["stage2_utilisation"] for c in children),
            }
        )
    )


if __name__ == "__main__":
    main()
