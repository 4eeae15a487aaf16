"""Distributed strategies that fit every task, including those with no trainable module parameters."""

from __future__ import annotations

from pytorch_lightning import strategies


class DDPStrategy(strategies.DDPStrategy):
    """Lightning's DDP, except that a module with no trainable parameters is left unwrapped.

    PyTorch's DistributedDataParallel refuses such modules. Style transfer is one: the tensors it
    optimises are images that each process owns, so there is nothing to average across processes,
    while the process group still shards the data and gathers the logged metrics.
    """

    def configure_ddp(self) -> None:
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()
