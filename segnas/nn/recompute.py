"""Selective recomputation: chosen activations are not kept for the backward pass but
recomputed there from tensors that are kept anyway.

Autograd keeps every tensor an op needs for its gradient (a convolution its input, BatchNorm its
input) until the backward pass. Where such a tensor is a cheap function of another kept tensor
(a ReLU of a kept input, a depthwise convolution of that ReLU), keeping the recipe instead of the
result trades a little recomputation for its memory. Unlike checkpointing a whole module
(``torch.utils.checkpoint``), nothing else is rerun: the forward runs once, side effects such as
BatchNorm's running statistics happen once, and the expensive ops' inputs stay stored.

Exactness: a recipe is the same function applied to the same (unchanged) tensors under the same
autocast state, so on a deterministic backend the recomputed tensor is bitwise the forward's and
every gradient is the one the plain graph gives. A recipe refuses to run when one of its inputs
was changed in place since the forward (autograd's own check for saved tensors, which hooks
bypass), and under double backward, whose graph it would cut.

Usage, inside one module's forward::

    with Recomputation() as keep:
        relu = keep.run(F.threshold, x, 0.0, 0.0)
        out = conv(relu)           # the convolution saves a recipe for relu, not relu

A tensor is marked after the op that made it and before any op saves it, so the op making it
must not save its own output: ``F.threshold(x, 0, 0)`` is ReLU whose gradient reads its input
(``F.relu`` keeps its output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class Recipe:
    """How to recompute one marked tensor: ``fn(*inputs)``, inputs being tensors (kept) or other
    recipes (recomputed first). The value is computed once, on first use in the backward pass,
    and freed with the recipe when the last graph node that saved it has run."""

    __slots__ = ("fn", "inputs", "versions", "autocast", "geometry", "value")

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: tuple[Any, ...], result: torch.Tensor) -> None:
        self.fn, self.inputs = fn, inputs
        self.versions = [arg._version if isinstance(arg, torch.Tensor) else None for arg in inputs]
        device = result.device.type
        self.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        self.geometry = (result.shape, result.stride(), result.dtype)
        self.value: torch.Tensor | None = None

    def compute(self) -> torch.Tensor:
        if self.value is None:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    "segnas.nn.recompute: a recomputed activation cannot take part in double "
                    "backward (create_graph=True); build the module without recomputation"
                )
            args = []
            for arg, version in zip(self.inputs, self.versions):
                if isinstance(arg, Recipe):
                    arg = arg.compute()
                elif isinstance(arg, torch.Tensor) and arg._version != version:
                    raise RuntimeError(
                        f"segnas.nn.recompute: an input of {getattr(self.fn, '__name__', self.fn)} (shape "
                        f"{tuple(arg.shape)}) was modified in place between the forward and the backward pass "
                        f"(version {version} -> {arg._version}); its recomputation would not be the forward's"
                    )
                args.append(arg)
            device, enabled, dtype = self.autocast
            with torch.autocast(device, dtype=dtype, enabled=enabled):
                value = self.fn(*args)
            if (value.shape, value.stride(), value.dtype) != self.geometry:
                raise RuntimeError(
                    f"segnas.nn.recompute: {getattr(self.fn, '__name__', self.fn)} recomputed a "
                    f"{value.dtype} {tuple(value.shape)} tensor of strides {value.stride()}, "
                    f"not the forward's {self.geometry}"
                )
            self.value = value
        return self.value


class Recomputation(torch.autograd.graph.saved_tensors_hooks):
    """While active, a tensor marked with :meth:`mark` (or any view of it) that an op saves for
    backward is saved as its :class:`Recipe`; every other saved tensor is kept as usual. With
    ``enabled=False`` (or when grad mode is off) it does nothing, so callers need no second code
    path. Do not nest it inside ``torch.utils.checkpoint``: the innermost saved-tensor hooks win,
    so the checkpoint would keep what this context does not mark."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._marked: dict[int, tuple[torch.Tensor, Recipe]] = {}
        super().__init__(self._pack, self._unpack)

    def __enter__(self) -> Recomputation:
        self.enabled = self.enabled and torch.is_grad_enabled()
        if self.enabled:
            super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        # the marks hold their tensors so a freed one's memory cannot be taken for a marked tensor
        self._marked.clear()
        if self.enabled:
            super().__exit__(*exc)

    def mark(self, tensor: torch.Tensor, fn: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
        """Declare ``tensor == fn(*inputs)``; marked tensors among ``inputs`` are held as their
        recipes, so the recipe keeps nothing a recipe replaces. Returns ``tensor``."""
        if self.enabled:
            resolved = tuple(self._resolve(arg) for arg in inputs)
            self._marked[tensor.untyped_storage().data_ptr()] = (tensor, Recipe(fn, resolved, tensor))
        return tensor

    def run(self, fn: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
        """``fn(*inputs)``, marked with that same call as its recipe (see :meth:`mark`)."""
        return self.mark(fn(*inputs), fn, *inputs)

    def _resolve(self, arg: Any) -> Any:
        """A marked tensor as its recipe; a view of one is refused, as holding it would keep the
        memory its recipe is there to free."""
        if not isinstance(arg, torch.Tensor):
            return arg
        entry = self._marked.get(arg.untyped_storage().data_ptr())
        if entry is None:
            return arg
        if entry[0] is not arg:
            raise ValueError(
                f"segnas.nn.recompute: a recipe's input {tuple(arg.shape)} is a view of a marked tensor "
                f"{tuple(entry[0].shape)}; pass the marked tensor and take the view inside the recipe"
            )
        return entry[1]

    def _pack(self, tensor: torch.Tensor) -> Any:
        entry = self._marked.get(tensor.untyped_storage().data_ptr())
        if entry is None or tensor.dtype != entry[0].dtype:
            return tensor
        base, recipe = entry
        return recipe, tensor.shape, tensor.stride(), tensor.storage_offset() - base.storage_offset()

    @staticmethod
    def _unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        recipe, shape, stride, offset = packed
        value = recipe.compute()
        return value.as_strided(shape, stride, value.storage_offset() + offset)
