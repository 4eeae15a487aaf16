"""Config keys renamed in this release. The old names keep working until the next release, each with a
warning that names the new key: on the command line (rewritten before Hydra reads it), in config files
(moved in the composed config before it is checked) and in the config stored in older checkpoints."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

RENAMED = {  # old key -> new key
    "task.iterations": "task.evaluations",  # it counts loss evaluations, not optimizer steps
    "task.train_metrics_every_n_steps": "task.train_metrics_every_n_batches",  # it counts batches
    # parameter grouping options left `optimizer`, which holds the torch optimizer's own arguments
    "optimizer.norm_weight_decay": "param_groups.norm_weight_decay",
    "optimizer.bias_weight_decay": "param_groups.bias_weight_decay",
    "optimizer.backbone_lr_mult": "param_groups.backbone_lr_mult",
}


def warn_renamed(old: str, new: str, where: str) -> None:
    """The deprecation message of one renamed key (on stderr before Hydra sets up logging, then also in
    run.log)."""
    logging.getLogger("run").warning(
        f"Deprecated: {old} ({where}) is now {new}, and was read as {new}. The old name stops working "
        "in the next release."
    )


def renamed_override(override: str) -> str:
    """A command-line override of a renamed key, rewritten to set the new key (`+` prefixes become `++`:
    the new key may already be in the config)."""
    stripped = override.lstrip("+~")
    prefix = override[: len(override) - len(stripped)]
    key, equals, value = stripped.partition("=")
    if key not in RENAMED:
        return override
    warn_renamed(key, RENAMED[key], f"given as `{override}`")
    return ("++" if prefix.startswith("+") else prefix) + RENAMED[key] + equals + value


def move_renamed_keys(cfg: DictConfig, quiet: bool = False) -> None:
    """Move the renamed keys that config files (or a checkpoint's stored config) still set to their new
    names, unresolved; the old key's value wins over the new key's default."""
    for old, new in RENAMED.items():
        parent_key, _, leaf = old.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None)
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue
        if not quiet:
            warn_renamed(old, new, "set in the composed config")
        value = OmegaConf.to_container(parent, resolve=False)[leaf]
        with open_dict(cfg):
            OmegaConf.update(cfg, new, value, merge=False, force_add=True)
            del parent[leaf]
