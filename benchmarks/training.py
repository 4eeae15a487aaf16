"""What the training benchmarks share: timing run.py's Trainer, and the plain loop it is compared with.

Both sides time the same thing: training steps `warmup` to `warmup + steps - 1`, from the start of
the first (after waiting for queued GPU work) to the end of the last (after waiting again).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device`, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Seconds per training step over steps `warmup` to `warmup + steps - 1`."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start = 0.0
        self.seconds_per_step: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.warmup + self.steps:  # global_step counts the step just done
            synchronize(pl_module.device)
            self.seconds_per_step = (time.perf_counter() - self.start) / self.steps


def framework_seconds_per_step(cfg: DictConfig, warmup: int, steps: int,
                               datamodule: pl.LightningDataModule | None = None) -> float:
    """Seconds per step of run.py's Trainer for `cfg` (everything app.build.build makes), after `warmup`
    steps; trained on `datamodule` instead of the config's when given."""
    from app import build as app_build

    built, module, trainer = app_build.build(cfg)
    timer = StepTimer(warmup, steps)
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule or built)
    if timer.seconds_per_step is None:
        raise ValueError(f"The run stopped before step {warmup + steps}: raise trainer.max_steps, or "
                         "give the datamodule more batches per epoch.")
    return timer.seconds_per_step


def plain_seconds_per_step(cfg: DictConfig, warmup: int, steps: int,
                           datamodule: pl.LightningDataModule | None = None) -> float:
    """Seconds per step of a hand-written loop with `cfg`'s data (or `datamodule`'s), network, loss and
    optimizer.

    It applies the run's precision (autocast, and a GradScaler for fp16), channels_last and
    torch.compile as a careful user would by hand; nothing else: no metrics, logging or callbacks.
    Batches reach the device as the datamodule sends them (`transfer_batch_to_device`: a non-blocking
    copy of pinned memory, or its own decoding there).
    """
    pl.seed_everything(cfg.seed, workers=True)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    use_cuda = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.trainer = None
    if getattr(datamodule, "pin_memory", None) == "auto":  # what "auto" does under a CUDA trainer
        datamodule.pin_memory = device.type == "cuda"
    datamodule.setup("fit")
    net = instantiate(cfg.model).to(device)
    if cfg.get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    net.train()
    loss_of = instantiate(cfg.task, net=net, optimizer=None).compute_loss  # the task's loss, nothing else
    model = torch.compile(net) if cfg.get("compile") else net
    optimizer = instantiate(cfg.optimizer)(net.parameters())  # one group
    dtype = AUTOCAST.get(str(cfg.trainer.get("precision", "32")))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    loader = datamodule.train_dataloader()
    if len(loader) == 0:
        raise ValueError("The training loader has no batches: lower data.batch_size or drop_last.")
    epochs = (batch for _ in itertools.count() for batch in loader)  # as many epochs as the steps need
    start = 0.0
    for step, batch in enumerate(epochs):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        images, targets = datamodule.transfer_batch_to_device(batch, device, 0)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step == warmup + steps - 1:
            synchronize(device)
            return (time.perf_counter() - start) / steps
    raise AssertionError("unreachable: the batches never end")
