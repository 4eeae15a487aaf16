"""Knowledge distillation (Hinton et al., 2015): a frozen teacher's softened logits as a second target."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)), the KL summed over classes (dim 1) and
    averaged over samples, or over the pixels where `valid` is true (per-pixel logits, (N, K, H, W)).

    T^2 keeps the gradients' scale independent of T (the softened gradients shrink as 1/T^2). Computed
    in float32 whatever the autocast dtype; a batch with no valid pixel gives 0, not 0/0.
    """
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    if valid is None:
        return temperature**2 * kl.mean()
    weights = valid.to(kl.dtype)
    return temperature**2 * (kl * weights).sum() / weights.sum().clamp(min=1)


class Distillation:
    """A frozen teacher network and how its softened logits enter the training loss.

    Not an nn.Module on purpose: the teacher is no submodule of the student's LightningModule, so it is
    left out of the checkpoint, the optimizer, DDP's gradient synchronisation and the model summary.
    """

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float,
                 classes: Sequence[str] | None = None, source: str = "the teacher") -> None:
        check_distill_options(temperature, alpha)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.classes = list(classes) if classes else None
        self.source = source

    def to(self, device: torch.device) -> Distillation:
        """Move the teacher to `device` (and back into eval mode, whatever was done to it)."""
        self.teacher = self.teacher.to(device).eval()
        return self

    def loss(self, task_loss: torch.Tensor, images: torch.Tensor, student_logits: torch.Tensor,
             logits_of: Callable[[Any], torch.Tensor], valid: torch.Tensor | None = None) -> torch.Tensor:
        """(1 - alpha) x task loss + alpha x T^2 x KL(teacher || student) on the same (augmented,
        mixed) images; the teacher runs under no_grad in eval mode."""
        with torch.no_grad():
            teacher_logits = logits_of(self.teacher(images))
        if teacher_logits.shape != student_logits.shape:
            raise ConfigError(f"task.distill.teacher={self.source} returns logits of shape "
                              f"{tuple(teacher_logits.shape)} where the student returns "
                              f"{tuple(student_logits.shape)}: the teacher must predict the same classes "
                              "at the same resolution.")
        kd = distillation_loss(student_logits, teacher_logits, self.temperature, valid)
        return (1 - self.alpha) * task_loss + self.alpha * kd

    def check_classes(self, classes: Sequence[str] | None) -> None:
        """Refuse a teacher trained on other class names than the student's data (when both know them)."""
        if self.classes and classes and list(classes) != self.classes:
            shown = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
            mine = ", ".join(list(classes)[:6]) + (", ..." if len(classes) > 6 else "")
            raise ConfigError(f"task.distill.teacher={self.source} was trained on classes ({shown}), but "
                              f"this run's data has ({mine}): a teacher must predict the student's classes, "
                              "in the same order.")


def check_distill_options(temperature: float, alpha: float) -> None:
    """A positive temperature and an alpha in [0, 1]."""
    if not temperature or temperature <= 0:
        raise ConfigError(f"task.distill.temperature={temperature}: give a positive temperature, e.g. 4.")
    if not 0 <= alpha <= 1:
        raise ConfigError(f"task.distill.alpha={alpha}: the distillation weight is a fraction in [0, 1] "
                          "(loss = (1 - alpha) x task loss + alpha x T^2 x KL).")


def distill_options(distill: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `task.distill` node as a plain dict (checkpoints store it), checked."""
    options = {"teacher": None, "temperature": 4.0, "alpha": 0.5, **dict(distill or {})}
    options["teacher"] = None if options["teacher"] in (None, "") else str(options["teacher"])
    check_distill_options(float(options["temperature"]), float(options["alpha"]))
    return options
