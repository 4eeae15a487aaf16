"""What classification and segmentation share: a network, a loss, per-stage metrics, optimizers."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection

from core.contracts import PRUNED_KEY
from core.errors import ConfigError
from lightning_modules.distillation import Distillation
from lightning_modules.inference import predict_batch
from lightning_modules.metrics import SampleMean
from lightning_modules.optimization import ParamGroups, configure_optimization
from lightning_modules.pruning import layer_shapes, reshape_to
from lightning_modules.step_loss import StepLossReporter

STAGES = ("train", "val", "test")


class SupervisedTask(pl.LightningModule):
    """A LightningModule around `net` that subclasses specialise with a loss and metrics."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        train_metrics_every_n_batches: int = 1,
        param_groups: ParamGroups | None = None,
    ) -> None:
        super().__init__()
        if train_metrics_every_n_batches < 0:
            raise ConfigError(f"task.train_metrics_every_n_batches={train_metrics_every_n_batches}: use 1 "
                             "(every training batch), N > 1 (every N-th batch) or 0 (none).")
        self.net = torch.compile(net) if compile else net
        self.optimizer = optimizer
        # The optimizer is built with `lr`, so that Lightning's LearningRateFinder can set it.
        self.lr: float | None = optimizer.keywords.get("lr") if isinstance(optimizer, partial) else None
        self.scheduler = scheduler
        self.param_groups = param_groups
        self.train_metrics_every_n_batches = train_metrics_every_n_batches
        self._metrics_logged: set[str] = set()  # stages whose metric objects are logged this epoch
        self._step_loss = StepLossReporter()
        self._counted_batch: tuple[int, int] | None = None
        self.distillation: Distillation | None = None  # set by attach_teacher (task.distill.teacher)
        self.pruning: dict[str, Any] | None = None  # how the network was pruned, when it was

    def make_metrics(self) -> MetricCollection:
        """The metrics of one stage; each stage gets its own instance."""
        raise NotImplementedError

    def compute_loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        """The training objective for one batch."""
        raise NotImplementedError

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the configured inference mode (TTA, sliding window) for test and predict."""
        raise NotImplementedError

    def inference_description(self) -> str:
        """The inference mode in words, e.g. `whole` or `slide (crop 256, stride 171) + flip`."""
        raise NotImplementedError

    def predictions(self, output: Any) -> torch.Tensor:
        """Scores that the metrics compare with the target."""
        return output

    def metric_target(self, target: torch.Tensor) -> torch.Tensor:
        """The target that the metrics compare predictions with (the loss may take another form)."""
        return target

    def logits(self, output: Any) -> torch.Tensor:
        """The logits in a network's output (segmentation networks may return a dict)."""
        return output

    def distill_mask(self, target: torch.Tensor) -> torch.Tensor | None:
        """Where distillation counts (segmentation: pixels that are not ignored); None: everywhere."""
        return None

    def attach_teacher(self, distillation: Distillation) -> None:
        """Train with a frozen teacher's softened logits as a second target (`task.distill`)."""
        self.distillation = distillation

    def training_loss(self, x: torch.Tensor, output: Any, y: torch.Tensor) -> torch.Tensor:
        """The task loss, mixed with the teacher's distillation loss when there is a teacher."""
        loss = self.compute_loss(output, y)
        if self.distillation is None:
            return loss
        return self.distillation.loss(loss, x, self.logits(output), self.logits, self.distill_mask(y))

    def mark_pruned(self, how: dict[str, Any]) -> None:
        """Record that `net` was pruned (`how`: ratio, method, ...): checkpoints then store its shapes."""
        self.pruning = dict(how)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pruning is not None:
            checkpoint[PRUNED_KEY] = {**self.pruning, "shapes": layer_shapes(self.net)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A pruned network's checkpoint: give `net` its pruned shapes before the weights are loaded."""
        pruned = checkpoint.get(PRUNED_KEY)
        if pruned is not None:
            reshape_to(getattr(self.net, "_orig_mod", self.net), pruned["shapes"])
            self.mark_pruned({k: v for k, v in pruned.items() if k != "shapes"})

    def on_fit_start(self) -> None:
        if self.distillation is not None:
            self.distillation.to(self.device)
            self.distillation.check_classes(getattr(self.trainer.datamodule, "classes", None))

    def setup_metrics(self) -> None:
        """Create one metric collection per stage, registered so that Lightning moves and syncs them."""
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", self.make_metrics().clone(prefix=f"{stage}/"))
            # Losses as metrics too: their sums and counts add up across processes, so the logged
            # loss is the mean over samples however they were shared out.
            setattr(self, f"{stage}_loss", SampleMean())

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> dict[str, Any]:
        x, y = batch
        output = self.inference_logits(x) if stage == "test" else self(x)
        loss = self.training_loss(x, output, y) if stage == "train" else self.compute_loss(output, y)
        preds = self.predictions(output)
        # Nothing here reads a value back from the device (no `.item()`, no per-step `self.log` of a
        # tensor): a GPU's queue never drains while the host waits. Metric objects are logged once
        # per epoch; Lightning computes them from their own state at epoch end.
        getattr(self, f"{stage}_loss").update(loss, x.shape[0])
        if stage not in self._metrics_logged:
            self._log_loss(stage)
        if stage != "train" or self._updates_train_metrics(batch_idx):
            metrics = getattr(self, f"{stage}_metrics")
            metrics.update(preds, self.metric_target(y))
            if f"{stage}_metrics" not in self._metrics_logged:
                self._metrics_logged.add(f"{stage}_metrics")
                self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return {"loss": loss, "preds": preds.detach(), "target": y}

    def _log_loss(self, stage: str) -> None:
        """Log the stage's loss metric for this epoch (the training loss of every N-th step: `_step_loss`)."""
        self._metrics_logged.add(stage)
        loss = getattr(self, f"{stage}_loss")
        if stage == "train":  # the names Lightning gives a loss logged on step and epoch
            self.log("train/loss", loss, on_step=False, on_epoch=True, logger=False)
            self.log("train/loss_epoch", loss, on_step=False, on_epoch=True)
        else:
            self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def on_train_start(self) -> None:
        self._step_loss.start(self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._step_loss.after_batch(self, outputs.get("loss") if isinstance(outputs, dict) else outputs)

    def on_train_epoch_start(self) -> None:
        self._metrics_logged -= {"train", "train_metrics"}

    def on_train_epoch_end(self) -> None:
        self._step_loss.flush(self)

    def on_validation_epoch_start(self) -> None:
        self._metrics_logged -= {"val", "val_metrics"}

    def on_test_epoch_start(self) -> None:
        self._metrics_logged -= {"test", "test_metrics"}
        if self.trainer.is_global_zero:
            print(f"Test metrics from {self.inference_description()} inference.")
        for logger in self.loggers:  # TensorBoard: which mode produced the test metrics
            if hasattr(logger.experiment, "add_text"):
                logger.experiment.add_text("test/inference", self.inference_description(), self.global_step)

    def _updates_train_metrics(self, batch_idx: int) -> bool:
        # Metric updates cost host time at every step (none waits for the device): sampling training
        # batches saves it for runs whose steps are short.
        every = self.train_metrics_every_n_batches
        return every > 0 and batch_idx % every == 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        if self._is_repeated_closure_call(batch_idx):
            x, y = batch
            return self.training_loss(x, self(x), y)
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        return self._step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        return self._step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Class probabilities of a batch of new images (see `app.inputs`)."""
        return predict_batch(batch, self.inference_logits)

    def _is_repeated_closure_call(self, batch_idx: int) -> bool:
        # LBFGS evaluates the closure (training_step) several times per batch; metrics and
        # logs must count each batch once, at its first evaluation.
        key = (self.current_epoch, batch_idx)
        repeated = key == self._counted_batch
        self._counted_batch = key
        return repeated

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer
        if self.lr is not None:  # the LR finder may have changed it
            optimizer = partial(optimizer.func, *optimizer.args, **{**optimizer.keywords, "lr": self.lr})
        total_steps = self.trainer.estimated_stepping_batches
        batches = self.trainer.num_training_batches
        steps_per_epoch = (math.ceil(batches / self.trainer.accumulate_grad_batches)
                           if math.isfinite(batches) and batches > 0 else None)
        return configure_optimization(
            self, optimizer, self.scheduler, total_steps=total_steps,
            steps_per_epoch=steps_per_epoch, head_prefix=self.head_prefix(),
            include_frozen=self.unfreezes_later(), param_groups=self.param_groups,
        )

    def unfreezes_later(self) -> bool:
        """Whether frozen parameters start training during the fit (they then belong in the optimizer)."""
        return False

    def head_prefix(self) -> str | None:
        """Parameter-name prefix of the network's new head (`net.head_name`), if it declares one."""
        net = getattr(self.net, "_orig_mod", self.net)  # torch.compile wraps the network
        head_name = getattr(net, "head_name", None)
        if head_name is None:
            return None
        head = net.get_submodule(head_name)
        return next(name + "." for name, module in self.named_modules() if module is head)
