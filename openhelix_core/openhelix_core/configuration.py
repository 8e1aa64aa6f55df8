"""What every configuration dataclass of the suite shares."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Mapping, TypeVar

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], data: Mapping[str, Any]) -> Config:
    """Builds the dataclass ``cls`` from ``data``; unknown keys raise ValueError naming them.

    A typo in a saved or hand-written configuration must fail loudly rather than fall back to
    a default silently.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__}.from_dict expects a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**copy.deepcopy(dict(data)))


def check_int_fields(config: object, names: Iterable[str], minimum: int) -> None:
    """ValueError naming ``<Class>.<field>`` unless each named field is an int (a bool is not)
    of at least ``minimum`` (1: positive, 0: non-negative)."""
    kind = {1: "a positive int", 0: "a non-negative int"}[minimum]
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{type(config).__name__}.{name} must be {kind}, got {value!r}")
