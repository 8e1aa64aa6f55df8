"""What every configuration dataclass of the suite shares."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Mapping, TypeVar

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
