"""An ESTIMATE of inference latency on GreenWaves GAP8 (8-core RISC-V cluster + fabric
controller), for when the board is not attached. Every number it returns is labelled
``latency_estimated: true`` and ``latency_method: "lookup-table estimate"``.

The model, per layer (convolutions, linear layers, pooling), found by running the network once on
a zero input of the priced size with forward hooks (so any network works, not only a known
layer list):

- compute: ``MACs / (cores * macs_per_cycle[layer type])``. The lookup table gives sustained
  MACs per cycle per core for int8 kernels by layer type (3x3/kxk convolution, pointwise 1x1,
  depthwise, linear) and elements per cycle per core for pooling.
- memory, L2 -> L1: the layer's input, output and weights cross the cluster DMA once
  (``bytes / l2_l1_bytes_per_cycle``); they are cut into tiles that fit half of the usable L1
  (double buffering), each tile paying ``tile_overhead_cycles`` of DMA set-up. DMA overlaps
  compute, so the layer takes the larger of the two.
- memory, L3 -> L2: weights live in external L3 (HyperRAM) when all of the network's weights do
  not fit the usable L2, and activations spill to L3 when the layer's input + output do not fit
  beside them; those bytes stream at ``l3_bytes_per_cycle`` and are NOT overlapped (the
  conservative case of single-buffered L3 transfers).
- ``layer_overhead_cycles`` per layer (kernel launch, cluster fork/join).

BatchNorm and activations are assumed folded/fused into the convolutions (as GAP8 deployment
tools do), so they cost nothing; bilinear upsampling (a function, not a module) is not counted.
Cycles become milliseconds at ``cluster_mhz``.

The default throughputs (:data:`MACS_PER_CYCLE`, conf/hardware/gap8.yaml) are calibrated against
one published end-to-end deployment: DORY (Burrello et al., IEEE Trans. Computers 2021) runs
1.0-MobileNet-128 (MobileNetV1) on GAP8 at 4.3 fps, 232.6 ms for its 186.4 M MACs (0.80 GMAC/s).
Round per-layer-type figures for int8 PULP-NN kernels (3x3 1.9, pointwise 1.8, depthwise 0.4,
linear 1.0, pool 0.5), which estimated 130.6 ms (1.43 GMAC/s, 44 % optimistic), are scaled by
one factor, 0.446, so that the estimate meets DORY's figure; the ratios between layer types are
kept (``benchmarks/gap8_calibration.py``). One anchor fixes the scale, not the ratios: a network
whose MACs sit in other layer types than MobileNetV1's pointwise convolutions may be off by more.
A user with the board replaces the table with measured per-layer-type throughputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from segnas.errors import ConfigError
from segnas.hardware.latency import LatencyTarget

LAYER_TYPES = ("conv", "pointwise", "depthwise", "linear", "pool")
#: Sustained int8 MACs per cycle per core by layer type (pool: elements), calibrated against DORY's
#: end-to-end MobileNetV1-128 on GAP8 (module docstring); conf/hardware/gap8.yaml carries the same.
MACS_PER_CYCLE = {"conv": 0.85, "pointwise": 0.80, "depthwise": 0.18, "linear": 0.45, "pool": 0.22}


def layer_type(module: nn.Module) -> str | None:
    """The lookup-table row of ``module``, or None for layers the model does not price."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise"
        return "pointwise" if module.kernel_size == (1, 1) else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
        return "pool"
    return None


def _macs(module: nn.Module, kind: str, inputs: torch.Tensor, output: torch.Tensor) -> int:
    if kind in ("conv", "pointwise", "depthwise"):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if kind == "linear":
        return output.numel() * module.in_features
    return inputs.numel()  # pooling: one operation per input element


class Gap8Latency(LatencyTarget):
    """GAP8 latency from the analytical lookup-table model in the module docstring."""

    method = "lookup-table estimate"
    estimated = True

    def __init__(
        self,
        name: str = "gap8",
        cores: int = 8,
        cluster_mhz: float = 175.0,
        macs_per_cycle: dict[str, float] | None = None,
        bytes_per_weight: int = 1,
        bytes_per_activation: int = 1,
        l1_kb: float = 64.0,
        l2_kb: float = 512.0,
        l1_usable: float = 0.85,
        l2_usable: float = 0.75,
        l2_l1_bytes_per_cycle: float = 8.0,
        l3_bytes_per_cycle: float = 0.5,
        tile_overhead_cycles: float = 200.0,
        layer_overhead_cycles: float = 2000.0,
        batch: int = 1,
        threads: int = 1,
        warmup: int = 0,
        runs: int = 1,
        repeats: int = 1,
    ) -> None:
        # threads / warmup / runs / repeats mean nothing for a deterministic estimate; they are accepted
        # so that overrides written for the measured targets (hardware.runs=...) apply to every target
        super().__init__(name, threads=threads, warmup=warmup, runs=runs, batch=batch, repeats=repeats)
        table = dict(macs_per_cycle or MACS_PER_CYCLE)
        missing = [t for t in LAYER_TYPES if t not in table]
        positive = [
            cores,
            cluster_mhz,
            bytes_per_weight,
            bytes_per_activation,
            l1_kb,
            l2_kb,
            l2_l1_bytes_per_cycle,
            l3_bytes_per_cycle,
            *table.values(),
        ]
        if (
            missing
            or min(positive) <= 0
            or not (0 < l1_usable <= 1 and 0 < l2_usable <= 1)
            or tile_overhead_cycles < 0
            or layer_overhead_cycles < 0
        ):
            raise ConfigError(
                f"hardware={name}: macs_per_cycle needs every layer type {list(LAYER_TYPES)} "
                f"(missing {missing}); sizes, clocks, bandwidths and throughputs must be > 0 and "
                "l1_usable / l2_usable in (0, 1]"
            )
        self.cores = int(cores)
        self.cluster_mhz = float(cluster_mhz)
        self.macs_per_cycle = {k: float(v) for k, v in table.items()}
        self.bytes_per_weight = int(bytes_per_weight)
        self.bytes_per_activation = int(bytes_per_activation)
        self.l1_bytes = l1_kb * 1024 * l1_usable
        self.l2_bytes = l2_kb * 1024 * l2_usable
        self.l2_l1_bytes_per_cycle = float(l2_l1_bytes_per_cycle)
        self.l3_bytes_per_cycle = float(l3_bytes_per_cycle)
        self.tile_overhead_cycles = float(tile_overhead_cycles)
        self.layer_overhead_cycles = float(layer_overhead_cycles)

    def layers(self, model: nn.Module, input_size: tuple[int, int]) -> list[dict[str, Any]]:
        """One row per priced layer, in execution order: type, MACs and bytes moved."""
        rows: list[dict[str, Any]] = []

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            kind = layer_type(module)
            weights = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(
                {
                    "name": names[module],
                    "type": kind,
                    "macs": _macs(module, kind, inputs[0], output),
                    "weight_bytes": weights * self.bytes_per_weight,
                    "input_bytes": inputs[0].numel() * self.bytes_per_activation,
                    "output_bytes": output.numel() * self.bytes_per_activation,
                }
            )

        names = {m: n for n, m in model.named_modules() if layer_type(m) is not None}
        handles = [m.register_forward_hook(hook) for m in names]
        first = next(model.parameters(), None)
        x = torch.zeros(self.batch, 3, *input_size, device=first.device if first is not None else "cpu")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(x)
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        return rows

    def cycles(self, rows: list[dict[str, Any]]) -> list[float]:
        """Cycles of each row under the model in the module docstring."""
        weights_in_l3 = sum(r["weight_bytes"] for r in rows) > self.l2_bytes
        out = []
        for r in rows:
            compute = r["macs"] / (self.cores * self.macs_per_cycle[r["type"]])
            moved = r["input_bytes"] + r["output_bytes"] + r["weight_bytes"]
            tiles = max(1, math.ceil(moved / (self.l1_bytes / 2)))
            dma = moved / self.l2_l1_bytes_per_cycle + tiles * self.tile_overhead_cycles
            from_l3 = (r["weight_bytes"] if weights_in_l3 else 0) + max(
                0.0,
                r["input_bytes"]
                + r["output_bytes"]
                - (self.l2_bytes if weights_in_l3 else self.l2_bytes - r["weight_bytes"]),
            )
            out.append(max(compute, dma) + from_l3 / self.l3_bytes_per_cycle + self.layer_overhead_cycles)
        return out

    def measure(self, model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
        rows = self.layers(model, input_size)
        cycles = self.cycles(rows)
        total = sum(cycles)
        by_type = {
            t: sum(c for r, c in zip(rows, cycles) if r["type"] == t) / (self.cluster_mhz * 1e3) for t in LAYER_TYPES
        }
        result = self._result(
            [total / (self.cluster_mhz * 1e3)],
            f"GAP8 model ({self.cores} cores @ {self.cluster_mhz:g} MHz, not attached)",
        )
        result.update(
            {
                "latency_runs": 1,
                "latency_cycles": round(total),
                "latency_layers": len(rows),
                "latency_ms_by_layer_type": {t: round(v, 4) for t, v in by_type.items() if v},
            }
        )
        return result
