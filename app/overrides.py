"""The command line's overrides: which key each one sets, where a value came from, and applying them to
the config stored in a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf


def override_key(override: str) -> str:
    """The key a command-line override sets (`+a.b=1`, `~a.b` and `a.b=1` all set `a.b`)."""
    return override.lstrip("+~").partition("=")[0]


def command_line_overrides() -> list[str]:
    """This run's command-line overrides (Hydra's) as typed, or none outside a Hydra run.

    Read unresolved: an override such as `+model.width=${data.width}` is text here, not an interpolation.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)]


def command_line_override(key: str) -> str | None:
    """The command-line override that set `key`, if one did."""
    return next((o for o in command_line_overrides() if override_key(o) == key), None)


def where_set(key: str) -> str:
    """Where the value of `key` came from: the command line, or the composed config files."""
    override = command_line_override(key)
    if override is not None:
        return f"given on the command line as `{override}`"
    return "set in the composed config (conf/ or an experiment= file)"


def chosen_option(overrides: Sequence[str], group: str) -> str | None:
    """The option of config group `group` (e.g. `task=segment`) the last such override chose, if any."""
    chosen = [o.partition("=")[2] for o in overrides if "=" in o and override_key(o) == group]
    return chosen[-1] if chosen else None


def apply_overrides(config: DictConfig, overrides: Sequence[str], groups: Sequence[str]) -> None:
    """Apply the `group.key=value` overrides of `groups` to a stored config (`~key` deletes, `+key` adds)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if "." not in key or key.split(".")[0] not in groups:
            continue
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(config, parent)
            if node is not None and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(config, key, override.value(), merge=True, force_add=True)
