"""Optimizer and learning-rate scheduler wiring shared by every task."""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
)

from core.errors import ConfigError


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_factor: float = 0.0
) -> LambdaLR:
    """Linear warm-up over `warmup_fraction` of `total_steps`, then cosine decay to `min_factor`."""
    warmup_steps = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class ParamGroups:
    """How the optimizer groups a network's parameters: the `param_groups` config node, beside the plain
    torch arguments of `optimizer` (as timm's `create_optimizer_v2` takes its grouping options beside the
    optimizer's). The defaults leave every parameter in one plain group."""

    norm_weight_decay: float | None = None  # weight decay of normalisation layers (None: the optimizer's)
    bias_weight_decay: float | None = None  # weight decay of biases (None: the optimizer's)
    backbone_lr_mult: float = 1.0  # learning rate of a pretrained backbone relative to the new head

    def changed(self) -> dict[str, Any]:
        """The options that differ from one plain group, by name."""
        plain = asdict(ParamGroups())
        return {key: value for key, value in asdict(self).items() if value != plain[key]}


# Keys of the scheduler config that add a warm-up in front of any scheduler.
WARMUP_OPTIONS = ("warmup_epochs", "warmup_steps", "warmup_method", "warmup_decay")
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
               nn.modules.instancenorm._InstanceNorm)


def parameter_groups(
    module: nn.Module,
    lr: float,
    norm_weight_decay: float | None = None,
    bias_weight_decay: float | None = None,
    backbone_lr_mult: float = 1.0,
    head_prefix: str | None = None,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """Trainable parameters grouped as torchvision's reference `set_weight_decay` does, named `part/kind`.

    kind: `bias` (parameters named `bias`, when `bias_weight_decay` is set), `norm` (the other
    parameters of normalisation layers, when `norm_weight_decay` is set), `other`. part:
    `backbone` (learning rate x `backbone_lr_mult`) or `head` (names starting with `head_prefix`),
    only when `backbone_lr_mult` is not 1. Groups carry their own `weight_decay` and `lr` only
    where these differ from the optimizer's. `include_frozen`: frozen parameters too (optimizers
    skip parameters without gradients), for a backbone unfrozen later.
    """
    if backbone_lr_mult != 1.0 and head_prefix is None:
        raise ConfigError(
            f"param_groups.backbone_lr_mult={backbone_lr_mult} needs a network with a pretrained backbone "
            "and a new head (model=torchvision or its short configs such as resnet50); this network "
            "has no head to tell apart. Set param_groups.backbone_lr_mult=1."
        )
    groups: dict[tuple[str, str], list[nn.Parameter]] = {}
    for module_name, submodule in module.named_modules():
        for name, param in submodule.named_parameters(prefix=module_name, recurse=False):
            if not (param.requires_grad or include_frozen):
                continue
            if bias_weight_decay is not None and name.rpartition(".")[2] == "bias":
                kind = "bias"
            elif norm_weight_decay is not None and isinstance(submodule, NORM_LAYERS):
                kind = "norm"
            else:
                kind = "other"
            part = "head" if backbone_lr_mult == 1.0 or name.startswith(head_prefix) else "backbone"
            groups.setdefault((part, kind), []).append(param)
    decay = {"bias": bias_weight_decay, "norm": norm_weight_decay}
    result = []
    for (part, kind), params in groups.items():
        group: dict[str, Any] = {"params": params, "name": f"{part}/{kind}"}
        if decay.get(kind) is not None:
            group["weight_decay"] = decay[kind]
        if part == "backbone":
            group["lr"] = lr * backbone_lr_mult
        result.append(group)
    return result


def poly(optimizer: Optimizer, total_steps: int, power: float = 0.9, min_factor: float = 0.0) -> LambdaLR:
    """Polynomial decay per step: lr x ((1 - step / total_steps) ** power), down to lr x `min_factor`.

    MMSegmentation's `PolyLR` with `eta_min` = lr x `min_factor`.
    """

    def factor(step: int) -> float:
        progress = min(1.0, step / max(1, total_steps))
        return min_factor + (1.0 - min_factor) * (1.0 - progress) ** power

    return LambdaLR(optimizer, factor)


def configure_optimization(
    parameters: nn.Module | Iterable[nn.Parameter],
    optimizer: Callable[..., Optimizer],
    scheduler: dict[str, Any] | None,
    total_steps: int,
    steps_per_epoch: int | None = None,
    head_prefix: str | None = None,
    include_frozen: bool = False,
    param_groups: ParamGroups | None = None,
) -> dict[str, Any]:
    """Build the Lightning `configure_optimizers` answer from partial optimizer/scheduler configs.

    `parameters`: a module (whose named parameters `param_groups` can group, see `parameter_groups`)
    or plain parameters (one group). `include_frozen`: optimize frozen
    parameters too, for a backbone that is unfrozen during training. `scheduler` is the
    `scheduler` config group: `{scheduler: partial, interval, monitor, warmup_*, ...}`. Schedulers
    that take `total_steps` (one-cycle, warm-up cosine, poly) get it from the trainer, less the warm-up.
    """
    module = parameters if isinstance(parameters, nn.Module) else None
    every = list(module.parameters() if module else parameters)
    if not any(p.requires_grad for p in every):
        raise ConfigError("The network has no trainable parameters: is the whole model frozen?")
    grouping = (param_groups or ParamGroups()).changed()
    if grouping and module is None:
        raise ConfigError(f"param_groups ({grouping}) group a network's parameters by their layers; "
                          "these parameters belong to no network. Leave param_groups at its defaults.")
    if grouping:
        lr = getattr(optimizer, "keywords", {}).get("lr", _default_lr(optimizer))
        opt = optimizer(parameter_groups(module, lr, head_prefix=head_prefix,
                                         include_frozen=include_frozen, **grouping))
    else:
        opt = optimizer([p for p in every if p.requires_grad or include_frozen])
    if not scheduler or scheduler.get("scheduler") is None:
        return {"optimizer": opt}
    settings = {key: value for key, value in scheduler.items() if key not in WARMUP_OPTIONS}
    make_scheduler = settings.pop("scheduler")
    settings.setdefault("interval", "epoch")
    warmup = warmup_length(scheduler, settings["interval"], steps_per_epoch)
    if settings["interval"] == "epoch" and "total_steps" in inspect.signature(make_scheduler).parameters:
        total_steps = math.ceil(total_steps / steps_per_epoch) if steps_per_epoch else total_steps
    if warmup and math.isfinite(total_steps) and warmup >= total_steps:
        warnings.warn(
            f"The warm-up ({warmup} {settings['interval']}s) lasts the whole training ({int(total_steps)} "
            f"{settings['interval']}s): the learning rate never reaches its decay schedule.", stacklevel=2,
        )
    make_scheduler = max_lr_per_group(make_scheduler, opt)
    if "total_steps" in inspect.signature(make_scheduler).parameters:
        make_scheduler = _with_total_steps(make_scheduler, max(1, total_steps - warmup))
    lr_scheduler = make_scheduler(opt)
    if warmup > 0:
        lr_scheduler = with_warmup(opt, lr_scheduler, warmup, scheduler.get("warmup_method", "linear"),
                                   scheduler.get("warmup_decay", 0.01))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, **settings}}


def max_lr_per_group(make_scheduler: Callable[..., Any], optimizer: Optimizer) -> Callable[..., Any]:
    """A one-cycle partial with a `max_lr` for each group: a null `max_lr` peaks at each group's own lr
    (the optimizer's, which the LR finder may have set); a number is scaled for each group as its lr is
    (`param_groups.backbone_lr_mult`).

    OneCycleLR sets every group's lr from `max_lr`, so one value would undo the groups' own rates.
    """
    keywords = getattr(make_scheduler, "keywords", {})
    if "max_lr" in keywords and keywords["max_lr"] is None:
        return functools.partial(make_scheduler, max_lr=[group["lr"] for group in optimizer.param_groups])
    max_lr = keywords.get("max_lr")
    ratios = [group["lr"] / optimizer.defaults["lr"] for group in optimizer.param_groups]
    if not isinstance(max_lr, (int, float)) or all(ratio == 1.0 for ratio in ratios):
        return make_scheduler
    return functools.partial(make_scheduler, max_lr=[max_lr * ratio for ratio in ratios])


def warmup_length(scheduler: dict[str, Any], interval: str, steps_per_epoch: int | None) -> int:
    """The warm-up in the scheduler's own interval: steps, or epochs (`warmup_epochs` x steps per epoch)."""
    epochs, steps = scheduler.get("warmup_epochs") or 0, scheduler.get("warmup_steps") or 0
    if interval == "epoch":
        if steps:
            raise ConfigError(
                f"scheduler.warmup_steps={steps} with a scheduler stepped once per epoch: give the "
                "warm-up in epochs instead (scheduler.warmup_epochs)."
            )
        return int(epochs)
    if epochs and not steps_per_epoch:
        raise ConfigError("scheduler.warmup_epochs needs the number of steps per epoch, which this "
                          "trainer does not know: give scheduler.warmup_steps instead.")
    return int(steps + epochs * (steps_per_epoch or 0))


def with_warmup(
    optimizer: Optimizer, main: LRScheduler, length: int, method: str = "linear", decay: float = 0.01
) -> SequentialLR:
    """torchvision's reference warm-up: `length` intervals of LinearLR from `decay` x lr up to lr (or
    ConstantLR at `decay` x lr), then `main`, which starts counting from zero."""
    if isinstance(main, ReduceLROnPlateau):
        raise ConfigError("scheduler=plateau cannot follow a warm-up (PyTorch chains only schedulers "
                          "that step by count): set scheduler.warmup_epochs=0 and scheduler.warmup_steps=0.")
    if method == "linear":
        warmup: LRScheduler = LinearLR(optimizer, start_factor=decay, total_iters=length)
    elif method == "constant":
        warmup = ConstantLR(optimizer, factor=decay, total_iters=length)
    else:
        raise ConfigError(f"scheduler.warmup_method={method!r} is unknown: use linear or constant.")
    return SequentialLR(optimizer, [warmup, main], milestones=[length])


def _default_lr(make_optimizer: Callable[..., Optimizer]) -> float:
    func = getattr(make_optimizer, "func", make_optimizer)
    return inspect.signature(func).parameters["lr"].default


def _with_total_steps(make_scheduler: Callable[..., Any], total_steps: int) -> Callable[..., Any]:
    keywords = getattr(make_scheduler, "keywords", {})
    if keywords.get("total_steps") is not None:
        return make_scheduler
    if not math.isfinite(total_steps) or total_steps <= 0:
        raise ConfigError(
            "This scheduler needs the total number of training steps; set trainer.max_epochs "
            "or trainer.max_steps to a finite value."
        )
    return lambda opt: make_scheduler(opt, total_steps=int(total_steps))


def inverse_time(optimizer: Optimizer, decay: float = 5e-5) -> LambdaLR:
    """Inverse-time decay per step: lr / (1 + `decay` x step) (pytorch-AdaIN's schedule)."""
    return LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
