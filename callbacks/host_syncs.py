"""Counting the host-device synchronisations of training steps, on any machine (no GPU needed).

On a CUDA device some operations make the host wait until every queued kernel has run: reading a
value (`.item()`, `bool(t)`, `float(t)`, printing), sizes that depend on values (`nonzero`, boolean
masks, `unique`, `masked_select`, `bincount`, `repeat_interleave` without `output_size`), `torch.equal`,
and blocking copies to the host. While the host waits the device has nothing queued, so each one costs
a step the time it takes to launch the kernels after it.

`SyncCounter` counts them with a TorchDispatchMode: it follows which tensors would live on the
device (those it is told about, the model's, and everything computed from them) and counts the
operations above when they touch such a tensor. On the CPU this counts what a CUDA run would wait
for, without a GPU. `CountHostSyncs` counts them per training step, over every callback, the
logger and the data loading between one step's start and the next's; on CUDA it can ask torch's own
`torch.cuda.set_sync_debug_mode` instead.
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter
from typing import Any

import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torchmetrics import Metric

ALWAYS_SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "_unique",
                  "_unique2", "unique_consecutive", "unique_dim", "equal", "histc"}
MASK_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}
COPIES = {"copy_", "_to_copy"}


def waits_for_device(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether aten operation `name` on device tensors `args` makes a CUDA host wait."""
    if name in ALWAYS_SYNCING:
        return True
    if name == "repeat_interleave":  # the output size comes from the repeats' sum, unless given
        return kwargs.get("output_size") is None and isinstance(args[0], torch.Tensor)
    if name in MASK_INDEXING and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
    return False


class CpuOnlyChecks(TorchFunctionMode):
    """Marks the calls whose host reads happen only off CUDA (argument checks CUDA leaves to the kernels)."""

    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # one_hot checks `min() >= 0` and `max() < num_classes` with .item() on the CPU only
        cpu_only = func is torch.nn.functional.one_hot and (len(args) > 1 or "num_classes" in kwargs)
        self.counter.quiet += cpu_only
        try:
            return func(*args, **kwargs)
        finally:
            self.counter.quiet -= cpu_only


class SyncCounter(TorchDispatchMode):
    """Counts, while `active`, the operations on device tensors that make a CUDA host wait.

    Device tensors are the ones given to `on_device`, and every output of an operation that had one as
    input, except the host side of a non-blocking copy (a pinned-memory read that does not wait).
    Tensors made on the host (`torch.tensor(1.0)`, an optimizer's step count) are not device tensors:
    a factory called with `device=` is indistinguishable on the CPU, so its first use counts only once
    device data has flowed into it.
    """

    def __init__(self, explain: bool = False) -> None:
        super().__init__()
        self._device: dict[int, weakref.ref] = {}  # id -> the tensor (ids of dead tensors get reused)
        self._pruned_at = 1024
        self.active = False
        self.count = 0
        self.quiet = 0
        self.explain = explain
        self.where: Counter[str] = Counter()  # operation and caller -> count, with `explain`

    def on_device(self, *tensors: Any) -> None:
        """Treat these tensors (any nesting of lists, dicts, modules, metrics) as living on the device."""
        for item in tensors:
            if isinstance(item, torch.nn.Module):
                self.on_device(*item.parameters(), *item.buffers())
                for metric in (m for m in item.modules() if isinstance(m, Metric)):
                    self.on_device(*(getattr(metric, name) for name in metric._defaults))
            else:
                self._mark(leaf for leaf in tree_leaves(item) if isinstance(leaf, torch.Tensor))

    def _mark(self, tensors: Any) -> None:
        for tensor in tensors:
            self._device[id(tensor)] = weakref.ref(tensor)
        if len(self._device) > 2 * self._pruned_at:
            self._device = {key: ref for key, ref in self._device.items() if ref() is not None}
            self._pruned_at = max(1024, len(self._device))

    def _is_device(self, tensor: Any) -> bool:
        ref = self._device.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        from_device = any(self._is_device(t) for t in inputs)
        host_destination = name in COPIES and not self._is_device(args[0] if name == "copy_" else None)
        asynchronous = host_destination and kwargs.get("non_blocking", len(args) > 2 and args[2])
        if from_device and self.active and not self.quiet and (
                waits_for_device(name, args, kwargs) or (name == "copy_" and host_destination
                                                         and not asynchronous)):
            self._count(name)
        out = func(*args, **kwargs)
        if from_device and not (name == "copy_" and host_destination):
            self._mark(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out

    def _count(self, name: str) -> None:
        self.count += 1
        if self.explain:
            frames = [f for f in traceback.extract_stack() if not f.filename.endswith("host_syncs.py")]
            caller = next((f for f in reversed(frames) if "/torch/" not in f.filename), frames[-1])
            self.where[f"{name} at {caller.filename}:{caller.lineno} ({caller.name})"] += 1

    def __enter__(self) -> SyncCounter:
        self._checks = CpuOnlyChecks(self)
        self._checks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._checks.__exit__(*exc)


class CountHostSyncs(pl.Callback):
    """Host-device synchronisations per training step, over steps `warmup` to `warmup + steps - 1`.

    Put it first in `trainer.callbacks`: its window runs from one step's `on_train_batch_start` to the
    next's, so every other callback, the module's step, the optimizer, the logger and the loading of
    the next batch fall inside it. On CUDA with `cuda_debug_mode`, torch's own sync debug mode counts
    (its warnings); otherwise a SyncCounter, which must be entered around `trainer.fit`.
    """

    def __init__(self, warmup: int, steps: int, counter: SyncCounter | None = None) -> None:
        self.warmup, self.steps = warmup, steps
        self.counter = counter
        self.counted_steps = 0
        self.cuda_warnings: list[str] = []
        self._catcher: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        counting = self.warmup <= trainer.global_step < self.warmup + self.steps
        self.counted_steps += counting
        if self.counter is not None:  # what lives on the device: model, metrics, batch, callbacks' tensors
            held = [value for cb in trainer.callbacks if cb is not self for value in vars(cb).values()]
            self.counter.on_device(pl_module, batch, *held)
            self.counter.active = counting
        elif counting and self._catcher is None:
            self._start_cuda_count()
        elif not counting and self._catcher is not None:
            self._stop_cuda_count()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.counter is not None:
            self.counter.active = False
        elif self._catcher is not None:
            self._stop_cuda_count()

    @property
    def per_step(self) -> float:
        """Synchronisations per counted step (the run must start step `warmup + steps` to end the last)."""
        count = self.counter.count if self.counter is not None else len(self.cuda_warnings)
        return count / self.steps

    def _start_cuda_count(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self.cuda_warnings = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _stop_cuda_count(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        self.cuda_warnings = [str(w.message) for w in self.cuda_warnings
                              if "synchronizing CUDA operation" in str(w.message)]
