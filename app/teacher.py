"""`task.distill.teacher=CKPT`: the teacher network rebuilt from a checkpoint of this framework, checked
against the student's run (task, classes, input channels) before anything trains."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from app.trained_model import build_from_checkpoint, load_checkpoint
from core.contracts import CLASSES_KEY
from core.errors import CheckpointError
from lightning_modules.distillation import Distillation


def teacher_mismatch(teacher: DictConfig, student: DictConfig) -> str | None:
    """Why a network trained with config `teacher` cannot teach the run `student`, or None."""
    if teacher.get("task_name") != student.get("task_name"):
        return (f"it was trained for task={teacher.get('task_name')} and this run is "
                f"task={student.get('task_name')}")
    for key, what in (("num_classes", "classes"), ("channels", "input channels")):
        theirs, mine = teacher.data.get(key), student.data.get(key)
        if theirs != mine:
            return f"it predicts from/to {theirs} {what} where this run has {mine} (data.{key})"
    return None


def load_teacher(cfg: DictConfig) -> Distillation:
    """The frozen teacher of `task.distill` with its temperature and weight."""
    options = cfg.task.distill
    path = str(options.teacher)
    config, checkpoint = load_checkpoint(path, [])
    problem = teacher_mismatch(config, cfg)
    if problem:
        raise CheckpointError(f"task.distill.teacher={path} cannot teach this run: {problem}. A teacher is "
                              "a checkpoint of this framework for the same task, classes and input channels "
                              "(any network).")
    _, module = build_from_checkpoint(config, checkpoint)
    network = OmegaConf.select(config, "model.name") or str(config.model._target_).rsplit(".", 1)[-1]
    print(f"Distilling from {Path(path).name} ({network}, "
          f"{sum(p.numel() for p in module.net.parameters()):,} parameters): temperature "
          f"{options.temperature}, alpha {options.alpha}.")
    return Distillation(module.net, float(options.temperature), float(options.alpha),
                        classes=checkpoint.get(CLASSES_KEY), source=path)
