"""Costs checked against counts made independently of FlopCounterMode and of our own counter."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import timm
import torch
from hydra.utils import instantiate
from torch import nn

from segnas.errors import ConfigError
from segnas.hardware import (
    MACS_NOTE,
    OnnxRuntimeLatency,
    TorchLatency,
    count_macs,
    count_params,
    export_onnx,
    profile,
)
from segnas.nn import DeepLabV3Plus, build_backbone
from segnas.quantize.latency import OnnxRuntimeInt8Latency
from segnas.spaces import build, presets
from tests.conftest import compose_config

#: Parameters of deeplabv3plus-mobilenetv2 with 21 classes (PASCAL VOC), BN affine included.
MOBILENETV2_21_PARAMS = 5_816_053
LATENCY_FIELDS = {
    "latency_ms",
    "latency_target",
    "latency_method",
    "latency_estimated",
    "latency_runs",
    "threads",
    "device",
}


@pytest.fixture(scope="module")
def mobilenet():
    return build(presets()["deeplabv3plus-mobilenetv2"], num_classes=21)


@pytest.fixture(scope="module")
def tiny():
    backbone = build_backbone("mobilenetv2_100")
    return DeepLabV3Plus(backbone, 3, aspp_rates=(2,), aspp_channels=8, decoder_channels=8, low_level_channels=4)


def hooked_macs(model: nn.Module, size: tuple[int, int]) -> int:
    """Cout·(Cin/groups)·kh·kw·Hout·Wout per Conv2d and in·out per Linear row, by hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
            total += output.shape[0] * per_pixel * output.shape[2] * output.shape[3]
        else:
            total += output.numel() // output.shape[-1] * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *size))
    finally:
        for handle in handles:
            handle.remove()
    return total


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_macs_equal_conv_count(mobilenet, size):
    """FlopCounterMode counts only convolutions here: BN, ReLU, pooling, interpolation cost 0."""
    assert count_macs(mobilenet, size) == hooked_macs(mobilenet, size)


def test_macs_scale_with_batch_and_restore_mode(tiny):
    tiny.train()
    assert count_macs(tiny, (32, 32), batch=2) == 2 * count_macs(tiny, (32, 32))
    assert tiny.training


def head_params(
    cin: int, low: int, classes: int, rates: int, aspp: int = 256, dec: int = 256, low_out: int = 48
) -> int:
    """DeepLabV3+ head by hand: bias-free convs, each with a BN (2 params per channel)."""
    bn = 2
    aspp_params = (
        cin * aspp
        + bn * aspp  # 1x1 branch
        + rates * (cin * aspp * 9 + bn * aspp)  # atrous branches
        + cin * aspp
        + bn * aspp  # image pooling
        + (2 + rates) * aspp * aspp
        + bn * aspp
    )  # projection
    decoder = (
        low * low_out
        + bn * low_out
        + (aspp + low_out) * dec * 9
        + bn * dec
        + dec * dec * 9
        + bn * dec
        + dec * classes
        + classes
    )  # classifier, with bias
    return aspp_params + decoder


def test_params_equal_backbone_plus_hand_counted_head(mobilenet):
    timm_backbone = timm.create_model("mobilenetv2_100", features_only=True, out_indices=(1, 2, 3, 4))
    backbone = sum(p.numel() for p in timm_backbone.parameters())
    assert count_params(mobilenet) == backbone + head_params(320, 24, 21, rates=3)
    assert count_params(mobilenet) == MOBILENETV2_21_PARAMS


def test_params_include_frozen(tiny):
    before = count_params(tiny)
    for p in tiny.backbone.parameters():
        p.requires_grad_(False)
    try:
        assert count_params(tiny) == before
    finally:
        for p in tiny.backbone.parameters():
            p.requires_grad_(True)


def test_onnx_export_matches_torch(tmp_path, tiny):
    import onnxruntime as ort

    tiny.train()
    path = export_onnx(tiny, tmp_path / "model.onnx", (64, 64))
    assert tiny.training
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 2):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = tiny.eval()(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4


def test_onnx_dynamo_export_also_matches(tmp_path):
    import onnxruntime as ort

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    path = export_onnx(model, tmp_path / "model.onnx", (16, 16), dynamo=True)
    x = torch.randn(2, 3, 16, 16)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-4


def test_onnx_export_without_onnx_says_what_to_install(monkeypatch, tmp_path, tiny):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        export_onnx(tiny, tmp_path / "m.onnx", (32, 32))


def check_latency(result: dict, target: str, method: str) -> None:
    assert LATENCY_FIELDS <= set(result)
    assert result["latency_ms"] > 0
    assert result["latency_target"] == target
    assert result["latency_method"] == method
    assert result["latency_estimated"] is False
    assert result["latency_runs"] == 3 and result["threads"] == 1


def test_torch_latency(tiny):
    threads = torch.get_num_threads()
    tiny.train()
    result = TorchLatency(threads=1, warmup=1, runs=3).measure(tiny, (32, 32))
    check_latency(result, "cpu", "torch")
    assert result["device"] == "cpu"
    assert torch.get_num_threads() == threads and tiny.training


def test_onnxruntime_latency(tiny):
    check_latency(OnnxRuntimeLatency(threads=1, warmup=1, runs=3).measure(tiny, (32, 32)), "onnx_cpu", "onnxruntime")


def test_onnxruntime_missing_is_a_config_error(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        OnnxRuntimeLatency().measure(tiny, (32, 32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_without_cuda_names_the_choice(tiny):
    with pytest.raises(ConfigError, match="hardware=gpu"):
        TorchLatency(name="gpu", device="cuda").measure(tiny, (32, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_latency(tiny):
    target = TorchLatency(name="gpu", device="cuda", threads=1, warmup=1, runs=3)
    result = target.measure(tiny, (32, 32))
    check_latency(result, "gpu", "torch")
    assert next(tiny.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    ("config", "cls"),
    [
        ("cpu", TorchLatency),
        ("gpu", TorchLatency),
        ("onnx_cpu", OnnxRuntimeLatency),
        ("onnx_cpu_int8", OnnxRuntimeInt8Latency),
    ],
)
def test_hardware_configs_instantiate(config, cls):
    target = instantiate(compose_config(f"hardware={config}", tiny=False).hardware)
    assert type(target) is cls and target.name == config and target.estimated is False


def test_profile(tiny):
    result = profile(tiny, (32, 32), TorchLatency(threads=1, warmup=0, runs=3))
    assert result["params"] == count_params(tiny)
    assert result["macs"] == count_macs(tiny, (32, 32))
    assert result["macs_note"] == MACS_NOTE and result["input_size"] == [32, 32]
    check_latency(result, "cpu", "torch")
    assert "latency_ms" not in profile(tiny, (32, 32), None)
