"""The genotype contract: stable hashes, files that round-trip, and refusals that say why."""

from __future__ import annotations

import pytest
import yaml

from segnas.errors import GenotypeError
from segnas.genotype import Genotype
from segnas.spaces import presets, resolve_arch
from segnas.spaces.deeplabv3plus import DeepLabV3PlusSpace


def test_hash_ignores_key_order_and_container_type():
    a = Genotype("s", {"backbone": "resnet50", "aspp_rates": [6, 12], "x": {"p": 1, "q": 2}})
    b = Genotype("s", {"x": {"q": 2, "p": 1}, "aspp_rates": (6, 12), "backbone": "resnet50"})
    assert a.hash == b.hash and len(a.hash) == 12


def test_hash_changes_with_value_and_space():
    base = Genotype("deeplabv3plus", {"output_stride": 16})
    assert base.hash != Genotype("deeplabv3plus", {"output_stride": 8}).hash
    assert base.hash != Genotype("other", {"output_stride": 16}).hash


def test_save_load_round_trip(tmp_path):
    genotype = presets()["deeplabv3plus-mobilenetv2"]
    loaded = Genotype.load(genotype.save(tmp_path / "run" / "genotype.yaml"))
    assert loaded == genotype and loaded.hash == genotype.hash


def test_edited_file_is_refused(tmp_path):
    path = presets()["deeplabv3plus-mobilenetv2"].save(tmp_path / "genotype.yaml")
    data = yaml.safe_load(path.read_text())
    data["arch"]["output_stride"] = 8
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(GenotypeError, match="edited"):
        Genotype.load(path)


@pytest.mark.parametrize("text", ["arch: [unclosed", "- 1\n- 2\n", "space: deeplabv3plus\n", "space: x\narch: 3\n"])
def test_malformed_file_is_refused(tmp_path, text):
    path = tmp_path / "genotype.yaml"
    path.write_text(text)
    with pytest.raises(GenotypeError, match=str(path)):
        Genotype.load(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(GenotypeError, match="does not exist"):
        Genotype.load(tmp_path / "absent.yaml")


def test_genotype_of_another_space_is_refused():
    foreign = Genotype("autodeeplab", {"cell": []})
    with pytest.raises(GenotypeError, match="autodeeplab") as info:
        DeepLabV3PlusSpace().check(foreign)
    assert "deeplabv3plus" in str(info.value)


def test_resolve_preset_name():
    genotype = resolve_arch("deeplabv3plus-resnet50")
    assert genotype.space == "deeplabv3plus"
    assert genotype.arch["backbone"] == "resnet50"
    assert genotype.arch["aspp_rates"] == [6, 12, 18]


def test_resolve_file_path(tmp_path):
    written = DeepLabV3PlusSpace().genotype({"backbone": "resnet50", "output_stride": 8})
    path = written.save(tmp_path / "genotype.yaml")
    assert resolve_arch(str(path)) == written
    assert resolve_arch(path).hash == written.hash


def test_resolve_fills_defaults_of_a_partial_file(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("space: deeplabv3plus\narch:\n  output_stride: 8\n")
    assert resolve_arch(str(path)).arch["aspp_rates"] == [12, 24, 36]


def test_resolve_unknown_name_lists_presets():
    with pytest.raises(GenotypeError, match="deeplabv3plus-mobilenetv2"):
        resolve_arch("deeplabv3plus-mobilenetv3")
