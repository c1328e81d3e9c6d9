"""The GAP8 latency estimate against a published end-to-end deployment.

DORY (Burrello et al., "DORY: Automatic End-to-End Deployment of Real-World DNNs on Low-Cost IoT
MCUs", IEEE Transactions on Computers 2021, abstract) runs 1.0-MobileNet-128 (MobileNetV1, width
1.0, 128x128 input, int8) end to end on GAP8 at 4.3 frames per second: 232.6 ms for the 186.4 M
MACs that our count gives the network, 0.80 GMAC/s. ``hardware=gap8``'s per-layer-type throughputs
(conf/hardware/gap8.yaml, ``macs_per_cycle``) are that network's calibration: the published table
of round PULP-NN figures scaled by one factor (found here by bisection) so that the estimate meets
the published latency, the ratios between layer types kept. Prints one JSON line per table (the
config's, the uncalibrated one this replaced, and the calibrated one fitted now) with the
estimate, the published figure and the relative error.

    python benchmarks/gap8_calibration.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import timm
from omegaconf import OmegaConf

from segnas.hardware import count_macs
from segnas.hardware.gap8 import Gap8Latency

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "hardware" / "gap8.yaml"
#: DORY's end-to-end 1.0-MobileNet-128 on GAP8: 4.3 frames per second.
PUBLISHED_MS = 1000.0 / 4.3
INPUT = (128, 128)
#: The table the config carried before this calibration (round figures for int8 kernels).
UNCALIBRATED = {"conv": 1.9, "pointwise": 1.8, "depthwise": 0.4, "linear": 1.0, "pool": 0.5}


def estimate(settings: dict[str, Any], table: dict[str, float], net: Any) -> float:
    return float(Gap8Latency(**{**settings, "macs_per_cycle": table}).measure(net, INPUT)["latency_ms"])


def fitted_scale(settings: dict[str, Any], net: Any) -> float:
    """The factor on the uncalibrated table at which the estimate meets the published latency."""
    low, high = 0.05, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if estimate(settings, {k: v * middle for k, v in UNCALIBRATED.items()}, net) > PUBLISHED_MS:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def main() -> None:
    settings = OmegaConf.to_container(OmegaConf.load(CONFIG))
    settings.pop("_target_")
    net = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    macs = count_macs(net, INPUT)
    scale = fitted_scale(settings, net)
    tables = {
        "config": dict(settings["macs_per_cycle"]),
        "uncalibrated": UNCALIBRATED,
        "fitted": {k: round(v * scale, 4) for k, v in UNCALIBRATED.items()},
    }
    for name, table in tables.items():
        ms = estimate(settings, table, net)
        print(
            json.dumps(
                {
                    "table": name,
                    "macs_per_cycle": table,
                    "network": "mobilenetv1_100 @128x128",
                    "macs_M": round(macs / 1e6, 1),
                    "estimate_ms": round(ms, 1),
                    "published_ms": round(PUBLISHED_MS, 1),
                    "gmac_per_s": round(macs / ms / 1e6, 3),
                    "error_pct": round(100 * (ms - PUBLISHED_MS) / PUBLISHED_MS, 1),
                    **({"scale": round(scale, 4)} if name == "fitted" else {}),
                }
            )
        )


if __name__ == "__main__":
    main()
