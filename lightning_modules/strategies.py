"""Distributed strategies that fit every task, including those with no trainable module parameters."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import strategies
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data import DataLoader, DistributedSampler


def unrepeated_evaluation_loader(dataloader: Any) -> Any:
    """`dataloader` with an evaluation sampler that gives every sample to exactly one process.

    Lightning's DistributedSampler pads the last shard with repeated samples so that every process
    runs as many batches; a split of 181 images on 2 processes would be scored as 182.
    """
    sampler = getattr(dataloader, "sampler", None)
    if not isinstance(dataloader, DataLoader) or type(sampler) is not DistributedSampler or sampler.shuffle:
        return dataloader
    unrepeated = UnrepeatedDistributedSampler(
        sampler.dataset, num_replicas=sampler.num_replicas, rank=sampler.rank, shuffle=False
    )
    return _update_dataloader(dataloader, unrepeated)


class DDPStrategy(strategies.DDPStrategy):
    """Lightning's DDP with exact evaluation, and a module with no trainable parameters left unwrapped.

    PyTorch's DistributedDataParallel refuses modules without trainable parameters. Style transfer is
    one: the tensors it optimises are images that each process owns, so there is nothing to average
    across processes, while the process group still shards the data and gathers the logged metrics.

    Validation and test score each sample once (see `unrepeated_evaluation_loader`), so processes may
    run different numbers of batches: validation then calls the module directly, not through the DDP
    wrapper, whose forward would broadcast buffers on every batch and wait for a process that has
    finished. The buffers (BatchNorm statistics) are broadcast once, as the wrapper would.
    """

    def configure_ddp(self) -> None:
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()

    def process_dataloader(self, dataloader: object) -> object:
        if self.lightning_module.trainer.overfit_batches:  # training on an unshuffled loader
            return dataloader
        return unrepeated_evaluation_loader(dataloader)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if torch.distributed.is_initialized():
            for buffer in self.lightning_module.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.val_step_context():
            return self.lightning_module.validation_step(*args, **kwargs)
