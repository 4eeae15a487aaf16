"""Unknown keys and group options, and values a run needs but was not given, as ConfigErrors that name
the key, list the accepted ones and suggest the nearest (difflib):

- Hydra's composition errors (`optimizer=adamm`, `trainer.max_epoch=3`, an override it cannot parse);
- keys forced in with `+`/`++` that the `_target_` they configure does not take, compared with its
  signature before anything is built (`++data.batch_size=4` for task=style), and constructors that do
  not take what run.py passes them (a task without `optimizer`);
- `???` values left unset and interpolations that lead nowhere (`${data.num_classes}` with a data
  config that has no num_classes).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from app.build import TASK_ARGUMENTS, TRAINER_ARGUMENTS
from app.overrides import override_key, where_set
from core.errors import ConfigError
from datamodules.image_files import is_clutter

HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
PASSED_BY_BUILD = {"task": TASK_ARGUMENTS, "trainer": TRAINER_ARGUMENTS}
EXTENDING = "README: Your own network, data and task"


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "", added: Iterable[str] = ()) -> str:
    """` Did you mean X?` for the choices (and the keys to be `added` with `+`) nearest to `word`, or
    nothing when none is near."""
    added = set(added)
    close = difflib.get_close_matches(word, sorted({*choices, *added}), n=3, cutoff=0.6)
    named = [("+" if choice in added else "") + prefix + choice for choice in close]
    return f" Did you mean {' or '.join(named)}?" if named else ""


def listed(names: Iterable[str], what: str, target: str) -> str:
    """The names, or their count when there are too many to read."""
    names = sorted(names)
    return ", ".join(names) if len(names) <= 15 else f"{len(names)} {what} (see the signature of {target})"


def passes_on(function: Any, var_keyword: str) -> bool:
    """Whether `function` hands its `**var_keyword` on to `super().__init__` (read from its source)."""
    try:
        source = inspect.getsource(inspect.unwrap(function))
    except (OSError, TypeError):
        return False
    return re.search(rf"super\(\)\.__init__\([^)]*\*\*{var_keyword}\b", source) is not None


def constructors(target: Any) -> list[Any]:
    """What calling `target` runs: a class's `__init__`s along its MRO (object's last), or the function."""
    if not isinstance(target, type):
        return [target]
    return [cls.__dict__["__init__"] for cls in target.__mro__ if "__init__" in cls.__dict__]


def accepted_keywords(target: Any) -> set[str] | None:
    """The keyword arguments `target` takes, or None when it takes any: a class's constructors are
    followed along its MRO while each hands its `**kwargs` on to `super().__init__`."""
    names: set[str] = set()
    for function in constructors(target):
        if function is object.__init__:
            return names
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return None
        keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names |= {p.name for p in parameters if p.kind in keywords and p.name != "self"}
        var_keyword = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        if var_keyword is None:
            return names
        if not passes_on(function, var_keyword):
            return None
    return names


def required_arguments(target: Any) -> list[str]:
    """The arguments without a default of `target`'s own constructor (its bases may get theirs from it)."""
    try:
        parameters = inspect.signature(constructors(target)[0]).parameters.values()
    except (TypeError, ValueError, IndexError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.name != "self" and p.default is p.empty]


def import_target(path: str, name: str) -> Any:
    """The object a `_target_` names, or a ConfigError saying what could not be imported."""
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"{path}._target_={name} cannot be imported ({type(error).__name__}: {error}). A class of "
            "your own package must be importable by run.py: install the package (pip install -e <its "
            f"folder>) or put its folder on PYTHONPATH ({EXTENDING})."
        ) from error


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(key, node) of every config node with a `_target_`, unresolved."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        children = ((key, node._get_node(key)) for key in node.keys())
    elif isinstance(node, ListConfig):
        children = ((str(index), node._get_node(index)) for index in range(len(node)))
    else:
        return
    for key, child in children:
        yield from target_nodes(child, f"{path}.{key}" if path else str(key))


def raw(node: DictConfig, key: str) -> Any:
    """The value at `key` of `node` as written (an interpolation stays `${...}`)."""
    return node._get_node(key)._value()


def is_partial(node: DictConfig) -> bool:
    """Whether a `_target_` node is instantiated as a partial (its code gives the rest of the arguments)."""
    return "_partial_" in node and raw(node, "_partial_") is True


def given_later(target: Any, node: DictConfig) -> set[str]:
    """The arguments the code gives a partial when it calls it: those without a default (an optimizer's
    params, a scheduler's optimizer)."""
    return set(required_arguments(target)) if is_partial(node) else set()


def check_target_node(path: str, node: DictConfig) -> None:
    """A `_target_` node's keys are arguments of its target, and the target takes what build() passes."""
    name = str(raw(node, "_target_"))
    if "${" in name:
        return
    target = import_target(path, name)
    given = [str(key) for key in node.keys() if key not in HYDRA_KEYS]
    passed = PASSED_BY_BUILD.get(path, ())
    accepted = accepted_keywords(target)
    if accepted is not None:
        unknown = [key for key in given if key not in accepted]
        if unknown:
            key = f"{path}.{unknown[0]}"
            settable = accepted - set(passed) - given_later(target, node)
            raise ConfigError(
                f"{key} ({where_set(key)}) is not an argument of {name}, which `{path}` builds."
                f"{did_you_mean(unknown[0], settable, path + '.')} It takes "
                f"{listed(settable, 'arguments', name)}."
            )
        missing = [argument for argument in passed if argument not in accepted]
        if missing:
            raise ConfigError(
                f"{path}._target_={name} does not take {', '.join(missing)}: run.py passes every {path} "
                f"{', '.join(passed)} as keyword arguments ({EXTENDING})."
            )
    if not is_partial(node) and "_args_" not in node:
        needed = [argument for argument in required_arguments(target) if argument not in (*given, *passed)]
        if needed:
            raise ConfigError(f"{name} needs {', '.join(needed)}, which `{path}` does not give: add "
                              f"{', '.join(f'{path}.{argument}' for argument in needed)} to its config.")


def check_target_keys(cfg: DictConfig, groups: Sequence[str] | None = None) -> None:
    """Every `_target_` node (of `groups`, or all) against its target's signature, before building it."""
    for path, node in target_nodes(cfg):
        if groups is None or path.split(".")[0] in groups:
            check_target_node(path, node)


def unresolved_values(node: Any, path: str = "") -> Iterator[tuple[str, Exception]]:
    """(key, error) of every value left `???` or whose interpolation cannot be resolved."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        full_key = f"{path}.{key}" if path else str(key)
        try:
            value = node[key]
        except (MissingMandatoryValue, InterpolationResolutionError) as error:
            yield full_key, error
            continue
        if isinstance(value, DictConfig | ListConfig):
            yield from unresolved_values(value, full_key)


def check_values_given(cfg: DictConfig, groups: Sequence[str] | None = None) -> None:
    """Values left `???` (to be given) and interpolations that cannot be resolved (to keys that do not
    exist, say), all named with where they are defined and the fix."""
    problems = [(key, error) for key, error in unresolved_values(cfg)
                if groups is None or key.split(".")[0] in groups]
    unset = [key for key, error in problems if type(error) is MissingMandatoryValue]
    if unset:
        lines = [f"  {key} (??? in {defined_in(key)}): add {missing_value_fix(cfg, key)}" for key in unset]
        raise ConfigError(f"{len(unset)} value(s) the run needs have no value:\n" + "\n".join(lines)
                          + "\nGive them on the command line (or in an experiment= file).")
    for key, error in problems:
        found = re.search(r"Interpolation key '([^']+)' not found", str(error))
        if found is None:
            continue
        parent, _, leaf = key.rpartition(".")
        written = raw(OmegaConf.select(cfg, parent), leaf) if parent else key
        missing = found.group(1)
        contract = (" A data config gives the numbers the network and the task read from it "
                    f"(num_classes, channels, image_size; segment: ignore_index): {EXTENDING}."
                    if missing.startswith("data.") else "")
        raise ConfigError(f"{key} cannot be resolved ({where_set(key)}): {key} is {written}, but the config "
                          f"has no {missing}.{contract}")
    if problems:
        key, error = problems[0]
        raise ConfigError(f"{key} cannot be resolved: {str(error).splitlines()[0]}. Fix the value of {key} "
                          f"or of the key it refers to ({where_set(key)}).")

def overrides_to_compose(overrides: Sequence[str], leaving_out: str) -> list[str]:
    """The command line's overrides without the key `leaving_out`, each sweep at its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    composable = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == leaving_out:
            continue
        if override.is_sweep_override():
            composable.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            composable.append(override.input_line)
    return composable


def unknown_key_error(key: str, overrides: Sequence[str]) -> ConfigError | None:
    """`key` names nothing in the config: the keys its parent node has and the nearest of them, from the
    config composed without it (None when that does not compose either)."""
    from hydra import compose

    try:
        cfg = compose("config", overrides=overrides_to_compose(overrides, key))
    except Exception:  # noqa: BLE001 - another bad override: Hydra's own message says enough
        return None
    parts = key.split(".")
    depth = len(parts) - 1  # the deepest node on the key's path that exists
    while depth > 0 and not isinstance(OmegaConf.select(cfg, ".".join(parts[:depth])), DictConfig):
        depth -= 1
    parent_key, leaf = ".".join(parts[:depth]), parts[depth]
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    keys = [str(k) for k in parent.keys() if k not in HYDRA_KEYS]
    prefix = f"{parent_key}." if parent_key else ""
    where = f"`{parent_key}`" if parent_key else "the top level of the config"
    given = next((o for o in overrides if override_key(o) == key), key)
    others = more_arguments(parent_key, parent, keys) if parent_key and "_target_" in parent else []
    message = f"{given}: {where} has no key {leaf}.{did_you_mean(leaf, keys, prefix, others)} "
    message += f"Its keys: {', '.join(keys)}."
    if others:
        target = raw(parent, "_target_")
        message += (f" {target} also takes {listed(others, 'more arguments', target)}: add one with "
                    f"+{prefix}<argument>=<value>.")
    return ConfigError(message)


def more_arguments(path: str, node: DictConfig, keys: Sequence[str]) -> list[str]:
    """The arguments of the target of `node` that its config does not list (`+path.<argument>=` adds one)."""
    target = import_target(path, str(raw(node, "_target_")))
    accepted = accepted_keywords(target) or set()
    return sorted(accepted - set(keys) - given_later(target, node) - set(PASSED_BY_BUILD.get(path, ())))


def composition_error(error: Exception, overrides: Sequence[str]) -> ConfigError:
    """Hydra's error for a command line that does not compose, as a ConfigError: the option or key that
    does not exist, the ones that do and the nearest; an override Hydra cannot read; else Hydra's text."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        options = [str(o) for o in error.options]
        return ConfigError(
            f"{group}={option}: the {group} group has no option {option}."
            f"{did_you_mean(option, options, group + '=')} Its options: {', '.join(options)} "
            f"(conf/{group}/, and {group}/ of your own config folder: hydra.searchpath, --config-dir)."
        )
    if isinstance(error, OverrideParseException):
        return ConfigError(f"{error.override}: Hydra cannot read this override "
                           f"({error.message.splitlines()[0]}). Quote values holding spaces, commas or "
                           "brackets; the grammar: https://hydra.cc/docs/advanced/override_grammar/basic/")
    unknown = re.match(r"Could not override '([^']+)'", str(error))
    converted = unknown_key_error(unknown.group(1), overrides) if unknown else None
    if converted is not None:
        return converted
    cause = f"\n{error.__cause__}" if error.__cause__ is not None else ""
    return ConfigError(f"{error}{cause}".strip())


def defined_in(key: str) -> str:
    """The config file of the group option that defines `key` (e.g. conf/data/image_folder.yaml)."""
    from hydra.core.hydra_config import HydraConfig

    group = key.split(".")[0]
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return f"conf/{group}/{choices[group]}.yaml" if choices.get(group) else "the composed config"


def missing_value_fix(cfg: DictConfig, key: str) -> str:
    """How to give `key` a value, with the value itself where the data shows it."""
    if key == "data.num_classes":
        train = Path(str(OmegaConf.select(cfg, "data.root", default="") or "")).expanduser() / "train"
        if train.is_dir() and not OmegaConf.is_missing(cfg.data, "root"):
            classes = [p for p in train.iterdir() if p.is_dir() and not is_clutter(p.name)]
            return f"data.num_classes={len(classes)} (the class folders of {train})"
        return "data.num_classes=N (the number of classes: for a folder dataset, its class folders)"
    if key == "data.root":
        return "data.root=/path/to/the/dataset (the folder that holds it)"
    return f"{key}=VALUE"
