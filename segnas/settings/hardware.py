"""The schemas of ``conf/hardware/*.yaml``: what prices a network's latency. Every target takes
the measurement counts (an estimate accepts them so that overrides written for the measured
targets apply to all); the GAP8 lookup-table model adds its device constants."""

from dataclasses import dataclass

from segnas.settings import base


@dataclass
class HardwareSettings:
    _target_: str = "???"
    name: str = "???"
    threads: int = 2
    warmup: int = 5
    runs: int = 10
    #: groups of `runs` timed passes: the latency is the median of their medians
    repeats: int = 3
    batch: int = 1

    def __post_init__(self) -> None:
        base.positive(self, "threads", "runs", "repeats", "batch")
        base.at_least(self, "warmup", 0)


@dataclass
class TorchLatencySettings(HardwareSettings):
    """Eager PyTorch on ``device`` (cpu, cuda, cuda:N)."""

    device: str = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device != "auto":
            base.device(self, "device")


@dataclass
class OnnxLatencySettings(HardwareSettings):
    """ONNX Runtime's CPU provider on the exported model."""


@dataclass
class OnnxInt8LatencySettings(HardwareSettings):
    """ONNX Runtime's CPU provider on the int8 (QDQ) export of the model (segnas/quantize/latency.py)."""

    #: seeded random images the activation ranges are calibrated on (latency does not depend on them)
    calib_images: int = 2
    per_channel: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(self, "calib_images")


@dataclass
class Gap8Settings(HardwareSettings):
    """GAP8's per-layer analytical lookup-table model (segnas/hardware/gap8.py)."""

    cores: int = 8
    cluster_mhz: float = 175.0
    #: sustained int8 MACs per core per cycle by layer type; null: segnas.hardware.gap8.MACS_PER_CYCLE
    macs_per_cycle: dict[str, float] | None = None
    bytes_per_weight: int = 1
    bytes_per_activation: int = 1
    l1_kb: float = 64.0
    l2_kb: float = 512.0
    l1_usable: float = 0.85
    l2_usable: float = 0.75
    l2_l1_bytes_per_cycle: float = 8.0
    l3_bytes_per_cycle: float = 0.5
    tile_overhead_cycles: float = 200.0
    layer_overhead_cycles: float = 2000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        base.positive(
            self,
            "cores",
            "cluster_mhz",
            "bytes_per_weight",
            "bytes_per_activation",
            "l1_kb",
            "l2_kb",
            "l2_l1_bytes_per_cycle",
            "l3_bytes_per_cycle",
        )
        for kind, value in (self.macs_per_cycle or {}).items():
            if value <= 0:
                base.fail(f"macs_per_cycle.{kind}", "a number > 0", value)
        base.between(self, "l1_usable", above=0.0, high=1.0)
        base.between(self, "l2_usable", above=0.0, high=1.0)
        base.at_least(self, "tile_overhead_cycles", 0.0)
        base.at_least(self, "layer_overhead_cycles", 0.0)


#: ``conf/hardware/<name>.yaml`` -> its schema.
HARDWARE = {
    "cpu": TorchLatencySettings,
    "gpu": TorchLatencySettings,
    "onnx_cpu": OnnxLatencySettings,
    "onnx_cpu_int8": OnnxInt8LatencySettings,
    "gap8": Gap8Settings,
}
