"""`compress.prune.ratio=R ckpt_path=CKPT`: a trained network pruned channel-wise (Torch-Pruning), fine-tuned
for `trainer.max_epochs`, tested; its checkpoints store the pruned shapes, so that `train=false`,
`predict` and `export` rebuild it."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from app.build import build
from app.overrides import command_line_overrides
from app.trained_model import load_checkpoint
from app.training import finish, fit_and_test, input_shape, log_hyperparameters
from core.errors import ConfigError
from lightning_modules.pruning import class_layers, prune_channels

TRAINED_GROUPS = ("data", "model", "task", "task_name", "monitor")  # what the checkpoint decides


def fine_tuning_config(cfg: DictConfig, trained: DictConfig) -> DictConfig:
    """This run's config (trainer, optimizer, schedule, callbacks, loggers) around the checkpoint's own
    data, network and task (with the command line's data/model/task overrides applied)."""
    if trained.task_name != cfg.task_name:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is a task={trained.task_name} checkpoint: add "
                          f"task={trained.task_name} so that its fine-tuning gets that task's callbacks "
                          "and outputs.")
    merged = cfg.copy()
    with open_dict(merged):
        for key in TRAINED_GROUPS:
            merged[key] = trained[key]
        for key in ("weights", "weights_backbone", "encoder_weights"):  # the checkpoint holds the weights
            if key in merged.model:
                merged.model[key] = None
        merged.train, merged.test = True, True
        merged.ckpt_path = None  # fine-tuning starts from the pruned weights, not a resumed state
    return merged


def taylor_gradients(module: Any, datamodule: Any, batches: int) -> Any:
    """A function that accumulates the task loss's gradients over `batches` training batches."""
    def accumulate() -> None:
        datamodule.setup("fit")
        for index, (images, targets) in enumerate(datamodule.train_dataloader()):
            if index >= batches:
                break
            module.compute_loss(module(images), targets).backward()
    return accumulate


def prune(cfg: DictConfig, module: Any, datamodule: Any) -> dict[str, Any]:
    """Prune `module.net` as `compress.prune` says; what was done, for the checkpoint and metrics."""
    options = cfg.compress.prune
    shape = input_shape(cfg)
    net = module.net
    num_classes = int(cfg.data.num_classes)
    keep = class_layers(net, num_classes)
    network = OmegaConf.select(cfg, "model.name") or str(cfg.model._target_).rsplit(".", 1)[-1]
    gradients = taylor_gradients(module, datamodule, int(options.calibration_batches))
    try:
        prune_channels(net, torch.zeros(shape), float(options.ratio), str(options.method), keep,
                       round_to=options.get("round_to"), accumulate_gradients=gradients)
        with torch.no_grad():
            output = module.logits(module.eval()(torch.zeros(shape)))
        module.train()  # Lightning keeps each module's mode: fine-tuning must start in training mode
    except ConfigError:
        raise
    except Exception as err:  # Torch-Pruning's tracer raises many types; the message names the layer
        raise ConfigError(f"{network} cannot be pruned channel-wise by Torch-Pruning: {type(err).__name__}: "
                          f"{str(err)[:400]}") from err
    if output.shape[1] != num_classes:
        raise ConfigError(f"Pruning {network} changed its output to {output.shape[1]} classes: its class "
                          "layer was not recognised; it cannot be pruned here.")
    return {"ratio": float(options.ratio), "method": str(options.method), "kept_layers": len(keep)}


def compress(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint's network, prune it, fine-tune, test again; metrics.json says both."""
    from app.costs import network_costs

    trained, checkpoint = load_checkpoint(cfg.ckpt_path, command_line_overrides())
    run_cfg = fine_tuning_config(cfg, trained)
    datamodule, module, trainer = build(run_cfg)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    log_hyperparameters(run_cfg, trainer)
    shape = input_shape(run_cfg)
    before = network_costs(module.net, shape)
    trainer.test(module, datamodule=datamodule)
    tested_before = {f"unpruned/{key}": float(value) for key, value in trainer.callback_metrics.items()
                     if key.startswith("test/")}
    how = prune(run_cfg, module, datamodule)
    module.mark_pruned(how)
    after = network_costs(module.net, shape)
    print(f"Pruned {how['ratio']:.0%} of the channels ({how['method']}): "
          f"{before['cost/parameters']:,} -> {after['cost/parameters']:,} parameters, "
          f"{before['cost/macs']:,} -> {after['cost/macs']:,} MACs at {after['cost/input_shape']}; "
          f"fine-tuning for {run_cfg.trainer.max_epochs} epoch(s).")
    metrics = fit_and_test(run_cfg, datamodule, module, trainer)
    metrics |= tested_before | {"unpruned/cost/parameters": before["cost/parameters"],
                                "unpruned/cost/macs": before["cost/macs"], "prune/ratio": how["ratio"]}
    return finish(run_cfg, module, trainer, metrics)
