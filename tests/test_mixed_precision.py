"""Mixed precision (``trainer.precision=bf16-mixed``, the ``gpu`` trainer's default): the custom
autograd functions and in-place buffer updates give what plain PyTorch ops give under the same
autocast, and the Auto-DeepLab search, ``task=train`` and FMAS scoring run under it with float32,
finite BatchNorm statistics. CPU autocast (bf16 and fp16) stands in for the GPU's."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segnas import pipeline
from segnas.searchers.autodeeplab import module as adl_module
from segnas.searchers.fmas.scoring import Scorer, recalibrate_bn
from segnas.spaces.autodeeplab.supernet import BlockEdges, _norm_scale, _PoolMix
from segnas.training import load_network
from tests.conftest import TINY_ADL, run_search

LOW = [torch.bfloat16, torch.float16]


def _norm_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _assert_float32_finite(buffers: dict[str, torch.Tensor]) -> None:
    assert buffers
    for name, value in buffers.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value).all(), name


@pytest.mark.parametrize("dtype", LOW)
def test_norm_scale_under_autocast_matches_batchnorm_times_scales(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    scales = torch.rand(6, requires_grad=True)
    target = torch.randn(4, 6, 8, 8)
    ours, reference = nn.BatchNorm2d(6, affine=False), nn.BatchNorm2d(6, affine=False)
    results = []
    for norm, apply in (
        (ours, lambda n, z: _norm_scale(n, z, scales)),
        (reference, lambda n, z: n(z) * scales.view(1, -1, 1, 1)),
    ):
        with torch.autocast("cpu", dtype=dtype):
            out = apply(norm, conv(x))
        (out.float() * target).sum().backward()
        results.append((out.detach(), x.grad.clone(), scales.grad.clone()))
        x.grad = scales.grad = None
    (out, grad_x, grad_s), (ref, ref_grad_x, ref_grad_s) = results
    assert out.dtype == ref.dtype  # BatchNorm keeps the low-precision input's dtype; the scales promote it
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(grad_x, ref_grad_x, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(grad_s, ref_grad_s, atol=5e-2, rtol=2e-2)
    for name in ("running_mean", "running_var"):
        assert getattr(ours, name).dtype == torch.float32
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), atol=1e-2, rtol=1e-2)
    assert ours.num_batches_tracked == 1


@pytest.mark.parametrize("dtype", LOW)
def test_pool_mix_under_autocast_matches_plain_pooling(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 7, 9, requires_grad=True)
    scales = torch.rand(12, requires_grad=True)
    target = torch.randn(2, 4, 7, 9)

    def plain(z: torch.Tensor) -> torch.Tensor:
        s_max, s_avg, s_skip = (t.view(1, -1, 1, 1) for t in scales.chunk(3))
        return F.max_pool2d(z, 3, 1, 1) * s_max + F.avg_pool2d(z, 3, 1, 1, count_include_pad=False) * s_avg + z * s_skip

    results = []
    for mix in (lambda z: _PoolMix.apply(z, scales), plain):
        with torch.autocast("cpu", dtype=dtype):
            out = mix(conv(x))
        (out.float() * target).sum().backward()
        results.append((out.detach(), x.grad.clone(), scales.grad.clone()))
        x.grad = scales.grad = None
    (out, grad_x, grad_s), (ref, ref_grad_x, ref_grad_s) = results
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(grad_x, ref_grad_x, atol=5e-2, rtol=2e-2)
    torch.testing.assert_close(grad_s, ref_grad_s, atol=5e-2, rtol=2e-2)


def test_autodeeplab_search_runs_under_bf16_mixed(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """The GPU default precision, with the supernet's recomputation on (as the paper-scale preset)."""
    cfg = make_cfg(
        "task=search",
        "searcher=autodeeplab",
        *TINY_ADL,
        "searcher.aspp_channels=8",
        "trainer.precision=bf16-mixed",
        "searcher.recompute=true",
    )
    run_dir = tmp_path / "run"
    built = []
    build = adl_module.AutoDeepLabSupernet
    monkeypatch.setattr(adl_module, "AutoDeepLabSupernet", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    run_search(cfg)
    blocks = [m for m in built[0].modules() if isinstance(m, BlockEdges)]
    assert blocks and all(block.recompute for block in blocks)
    with open(run_dir / "search.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert all(math.isfinite(float(row["weight_loss"])) for row in rows)
    assert math.isfinite(float(rows[-1]["arch_loss"]))
    state = torch.load(run_dir / "last.ckpt", weights_only=False)["state_dict"]
    buffers = _norm_buffers(state)
    _assert_float32_finite(buffers)
    # the mixed-op BatchNorms (updated by _norm_scale, not by nn.BatchNorm2d) did move
    mixed = [v for k, v in buffers.items() if ".edges." in k and k.endswith("running_mean")]
    assert mixed and all(v.abs().sum() > 0 for v in mixed)


def test_train_task_runs_under_bf16_mixed(make_cfg, tmp_path: Path) -> None:
    summary = pipeline.run(make_cfg("task=train", "arch=deeplabv3plus-mobilenetv2", "trainer.precision=bf16-mixed"))
    assert 0.0 <= summary["val_mIoU"] <= 1.0
    with open(next((tmp_path / "run").glob("csv/version_*/metrics.csv"))) as handle:
        metrics = list(csv.DictReader(handle))
    val_losses = [float(row["val/loss"]) for row in metrics if row.get("val/loss")]
    assert val_losses and all(math.isfinite(v) for v in val_losses)
    _, _, net = load_network(tmp_path / "run" / "model.pt")
    buffers = _norm_buffers(net.state_dict())
    _assert_float32_finite(buffers)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in buffers.items() if k.endswith("running_mean"))


def test_fmas_scoring_with_recalibration_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 16, 16, generator=generator)
    calib = [{"image": 2 + 3 * torch.randn(4, 3, 16, 16, generator=generator)} for _ in range(2)]
    recalibrate_bn(net, (b["image"] for b in calib))
    with torch.no_grad():
        logits = net.eval()(images)
    # targets: the fp32 predictions where they are not a near tie (bf16 may flip those)
    top = logits.topk(2, dim=1).values
    masks = torch.where(top[:, 0] - top[:, 1] > 0.05, logits.argmax(1), 255)
    val = [{"image": images[i : i + 4], "mask": masks[i : i + 4], "size": torch.tensor([[16, 16]] * 4)} for i in (0, 4)]
    scorer = Scorer(val, calib, 4)
    for module in net.modules():  # the scorer must find the statistics again, from scratch
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    assert scorer.score(net)["miou"] == 1.0
    full = {k: v.clone() for k, v in _norm_buffers(net.state_dict()).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = scorer.score(net)
    low_buffers = _norm_buffers(net.state_dict())
    _assert_float32_finite(low_buffers)
    for name, value in full.items():
        torch.testing.assert_close(low_buffers[name], value, atol=2e-2, rtol=2e-2)
    assert low["miou"] == pytest.approx(1.0, abs=0.02)
