"""The search space of an Optuna sweep, read from Hydra's override grammar (`choice`, `interval`,
`tag(log, interval)`, `range`), and the values a job returns as objective values. Imported when a sweep
starts, not when Hydra scans its plugins (a leading underscore): optuna is not imported by every run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from core.errors import ConfigError

PRIMITIVE = (str, int, float, bool, type(None))


class SearchSpace:
    """Distributions to ask for (from sweeps: `choice`, `interval`, `tag(log, interval)`, `range`) and the
    overrides every job gets as given (everything else on the command line, and fixed `params`)."""

    def __init__(self, overrides: Sequence[str]) -> None:
        self.distributions: dict[str, BaseDistribution] = {}
        self.fixed: dict[str, str] = {}
        self.verbatim: set[tuple[str, str]] = set()  # categorical choices held as override text
        try:
            parsed = OverridesParser.create().parse_overrides(list(overrides))
        except Exception as error:  # noqa: BLE001 - Hydra's parse errors: one clean message
            raise ConfigError(f"The Optuna search space cannot be read: {error}") from None
        for text, override in zip(overrides, parsed, strict=True):
            key = override.get_key_element()
            self.distributions.pop(key, None)
            self.fixed.pop(key, None)
            if override.is_sweep_override():
                self.distributions[key] = self.distribution(key, override)
            else:
                self.fixed[key] = text

    def distribution(self, key: str, override: Override) -> BaseDistribution:
        """The Optuna distribution of a sweep override; a ConfigError names the key if it is invalid."""
        try:
            return self.to_distribution(key, override)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"Search space {override.input_line}: {str(error).rstrip('.')}. Use choice(a, b, ...), "
                "interval(low, high) (int(interval(...)) for whole numbers), tag(log, interval(low, high)) "
                "with low > 0, or range(start, stop, step)."
            ) from None

    def to_distribution(self, key: str, override: Override) -> BaseDistribution:
        value = override.value()
        if isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log_scale)
            return FloatDistribution(float(value.start), float(value.end), log=log_scale)
        if isinstance(value, RangeSweep) and not value.shuffle:
            values = list(override.sweep_iterator())
            if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
                return IntDistribution(min(values), max(values), step=abs(int(value.step)))
            return FloatDistribution(min(values), max(values), step=abs(float(value.step)))
        if isinstance(value, ChoiceSweep | RangeSweep):  # a choice, or a shuffled range: unordered
            choices = []
            for choice in override.sweep_iterator():
                if not isinstance(choice, PRIMITIVE):
                    choice = Transformer.str(choice)
                    self.verbatim.add((key, choice))
                choices.append(choice)
            return CategoricalDistribution(choices)
        raise ValueError(f"{type(value).__name__} is not a search space Optuna can sample")

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's command line: its sampled parameters as overrides, then the fixed ones."""
        sampled = [f"{key}={value if (key, value) in self.verbatim else Transformer.str(value)}"
                   for key, value in params.items()]
        return [*sampled, *self.fixed.values()]


def objective_values(returned: Any, directions: int) -> list[float] | None:
    """What a job returned as one float per objective, or None when it returned no usable value."""
    values = returned if isinstance(returned, Sequence) and not isinstance(returned, str) else [returned]
    try:
        values = [float(value) for value in values]
    except (TypeError, ValueError):
        return None
    return values if len(values) == directions and all(math.isfinite(v) for v in values) else None
