"""Transfer learning: a frozen pretrained backbone, unfrozen at a chosen epoch (BaseFinetuning); a callback
the classification module configures for itself (`task.unfreeze_backbone_at_epoch`), so it lives beside it."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from core.errors import ConfigError


class BackboneFinetuning(BaseFinetuning):
    """Freeze everything but the head (parameter names starting with `head_prefix`) before training.

    Frozen batch-norm layers stay in eval mode, so they keep their pretrained statistics (Lightning
    restores each module's mode after validation). At epoch `unfreeze_at_epoch` (None: never) the
    backbone trains again, batch-norm statistics included; its parameters are already in the
    optimizer, in the groups `param_groups.backbone_lr_mult` gives their own learning rate, so the
    learning-rate schedule applies to them as to the head.
    """

    def __init__(self, head_prefix: str, unfreeze_at_epoch: int | None = None) -> None:
        super().__init__()
        self.head_prefix = head_prefix
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.unfrozen = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.unfreeze_at_epoch is not None and trainer.world_size > 1:
            # DDP registers only the parameters that require gradients when it wraps the model:
            # a backbone unfrozen later would train apart on every process.
            raise ConfigError(
                "task.unfreeze_backbone_at_epoch works on one device only: DDP would not synchronise "
                "the backbone unfrozen after it wrapped the model. Train the head alone first "
                "(model.freeze_backbone=true), then fine-tune everything from that checkpoint."
            )
        super().setup(trainer, pl_module, stage)

    def backbone(self, pl_module: pl.LightningModule) -> list[nn.Module]:
        """The modules that hold parameters outside the head."""
        return [module for name, module in pl_module.named_modules()
                if module._parameters and not (name + ".").startswith(self.head_prefix)]

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        for module in self.backbone(pl_module):
            for param in module.parameters(recurse=False):
                param.requires_grad = False
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        self.unfrozen = False

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch or self.unfrozen:
            return
        backbone = self.backbone(pl_module)
        self.make_trainable(backbone)
        for module in backbone:
            module.train(pl_module.training)
        self.unfrozen = True
