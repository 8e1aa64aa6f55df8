"""Checkpoint key bookkeeping shared by the models and the checkpoint loaders.

The error a checkpoint that does not fit its model raises, tensors renamed onto a model's
names with where each came from, the report of what loading matched, and the removal of
training-wrapper prefixes. The models check their own state dicts with these, and
:mod:`openhelix_core.checkpoints` (which builds the models from published releases) reports
with them; this module imports no model, so both import it without an import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

#: Prefixes training wrappers put before every key: ``module.`` (DistributedDataParallel)
#: and ``base_model.model.`` (PEFT).
_WRAPPER_PREFIXES = ("module.", "base_model.model.")
#: Keys an error message names before it only counts the rest.
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A checkpoint does not match the model: missing / unexpected keys, wrong shapes,
    inconsistent shards or vocabulary."""


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if hasattr(value, "shape") else value))


def abbreviated_keys(items: Iterable[str]) -> str:
    """``[a, b, ... (n more)]``: the first keys of ``items``, for error messages."""
    items = list(items)
    text = ", ".join(items[:_LIST_LIMIT])
    if len(items) > _LIST_LIMIT:
        text += f", ... ({len(items) - _LIST_LIMIT} more)"
    return f"[{text}]"


@dataclass
class ConvertedState:
    """Tensors renamed onto a model's names, with where each came from.

    Attributes:
        tensors: model key -> tensor.
        origins: model key -> checkpoint key it was read from (or a description for a
            derived tensor).
        ignored: checkpoint key -> why it is deliberately not loaded (buffers recomputed
            by the model, modules the model does not build, parts read elsewhere).
        unmapped: checkpoint keys no rule knows; reported as *unexpected*.
        derived: model key -> how it was computed instead of read.
        layout: the key layout the checkpoint was read as.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)
    layout: str = ""

    def add(self, target: str, tensor: torch.Tensor, origin: str) -> None:
        if target in self.tensors:
            raise CheckpointError(f"checkpoint keys {self.origins[target]!r} and {origin!r} both map to {target!r}")
        self.tensors[target] = tensor
        self.origins[target] = origin


@dataclass
class KeyMapping:
    """What loading a checkpoint into a model matched, and what it did not.

    Attributes:
        source: the checkpoint (path or description), used in messages.
        matched: model key -> checkpoint key, for every tensor loaded with the right shape.
        missing: model keys the checkpoint does not provide.
        unexpected: checkpoint keys that map to nothing in the model (never loaded).
        mismatched: model key -> (checkpoint shape, model shape) for shape conflicts.
        ignored: checkpoint key -> reason, for keys deliberately skipped (e.g. CLIP's
            ``attnpool``, which 3DDA never runs; recomputed buffers). Reported, not errors.
        derived: model key -> how it was obtained without being read (not an error).

    :meth:`raise_if_incomplete` turns missing, mismatched and (unless allowed) unexpected
    keys into one :class:`CheckpointError` that names them.
    """

    source: str = "checkpoint"
    matched: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compare(
        cls,
        tensors: Mapping[str, Any],
        expected: Mapping[str, Any],
        *,
        source: str = "checkpoint",
        origins: Mapping[str, str] | None = None,
        ignored: Mapping[str, str] | None = None,
        unmapped: Iterable[str] = (),
        derived: Mapping[str, str] | None = None,
    ) -> "KeyMapping":
        """Compare converted ``tensors`` (model names) with ``expected`` (model name ->
        tensor or shape). ``unmapped`` checkpoint keys are added to ``unexpected``."""
        origins = dict(origins or {})
        report = cls(source=source, ignored=dict(ignored or {}), derived=dict(derived or {}))
        for key in expected:
            if key not in tensors:
                report.missing.append(key)
                continue
            have, want = _shape(tensors[key]), _shape(expected[key])
            if have != want:
                report.mismatched[key] = (have, want)
            else:
                report.matched[key] = origins.get(key, key)
        report.unexpected = sorted([origins.get(k, k) for k in tensors if k not in expected] + list(unmapped))
        report.missing.sort()
        return report

    @property
    def complete(self) -> bool:
        """True when nothing is missing, mismatched or unexpected."""
        return not (self.missing or self.mismatched or self.unexpected)

    def problems(self, allow_unexpected: bool = False) -> list[str]:
        """Human-readable problem list (empty when the checkpoint fits)."""
        found = []
        if self.missing:
            found.append(f"missing key(s) {abbreviated_keys(self.missing)}")
        if self.unexpected and not allow_unexpected:
            found.append(f"unexpected key(s) {abbreviated_keys(self.unexpected)}")
        if self.mismatched:
            found.append("shape mismatch " + "; ".join(
                f"{key}: checkpoint {have} vs model {want}" for key, (have, want) in list(self.mismatched.items())[:_LIST_LIMIT]
            ) + (" ..." if len(self.mismatched) > _LIST_LIMIT else ""))
        return found

    def raise_if_incomplete(self, what: str = "the model", allow_unexpected: bool = False) -> None:
        """Raise :class:`CheckpointError` naming every kind of problem (first keys of each)."""
        found = self.problems(allow_unexpected)
        if found:
            raise CheckpointError(f"{self.source} does not match {what}: " + " | ".join(found))

    def summary(self) -> str:
        """One line: counts of each category."""
        return (f"{self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched, "
                f"{len(self.ignored)} ignored, {len(self.derived)} derived")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source, "matched": dict(self.matched), "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in self.mismatched.items()},
            "ignored": dict(self.ignored), "derived": dict(self.derived),
        }


def strip_wrapper_prefixes(key: str) -> str:
    """Remove leading ``module.`` (DistributedDataParallel) and ``base_model.model.`` (PEFT)."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


__all__ = ["CheckpointError", "ConvertedState", "KeyMapping", "abbreviated_keys", "strip_wrapper_prefixes"]
