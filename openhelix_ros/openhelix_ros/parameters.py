"""Node parameters: declared with descriptors, validated once, readable without a node.

Each node lists its parameters as :class:`ParameterSpec` constants. The node declares them
(so ``ros2 param describe`` shows the descriptions) and validates the values it got; the
tests validate the YAML files in ``config/`` against the same specs without ``rclpy.init``.

Every parameter is fixed at start-up: the nodes read them once, so a value changed later
would be echoed by ``ros2 param get`` without being applied, and a remote ``set_parameters``
(``use_sim_time`` with an attacker's ``/clock``, a safety limit) must not be able to change
how the arm is commanded. They are declared read-only and every change is refused with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

Validator = Callable[[Any], "str | None"]


class ParameterError(ValueError):
    """One or more parameters are invalid; the text names each one and why."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    validate: Validator | None = None


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be > 0, got {value}"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


def non_empty(value: Any) -> str | None:
    return None if len(value) > 0 else "must not be empty"


def topic_name(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty topic name"
    if any(ch.isspace() for ch in value):
        return f"'{value}' is not a valid topic name (contains whitespace)"
    return None


def optional_topic_name(value: Any) -> str | None:
    """A topic name, or '' for an input that is switched off."""
    return None if value == "" else topic_name(value)


def optional_path(value: Any) -> str | None:
    """A filesystem path, or '' for none; whether it exists is checked where it is used."""
    return None if value == value.strip() else f"{value!r} starts or ends with whitespace"


def length(count: int) -> Validator:
    def check(value: Any) -> str | None:
        return None if len(value) == count else f"needs {count} values, got {len(value)}"
    return check


def one_of(*choices: Any) -> Validator:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {list(choices)}, got {value!r}"
    return check


def validate_values(specs: Sequence[ParameterSpec], values: Mapping[str, Any],
                    allow_unknown: bool = False) -> dict[str, Any]:
    """Fills defaults, checks types against the defaults and runs the validators.

    Returns the complete parameter dictionary; raises :class:`ParameterError` listing every
    problem (unknown names, wrong types, invalid values) at once.
    """
    by_name = {spec.name: spec for spec in specs}
    problems = []
    if not allow_unknown:
        problems += [f"'{name}': unknown parameter" for name in values if name not in by_name]
    resolved = {}
    for spec in specs:
        value = values.get(spec.name, spec.default)
        if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _same_type(spec.default, value):
            problems.append(f"'{spec.name}': expected {type(spec.default).__name__}, got {value!r}")
            continue
        error = spec.validate(value) if spec.validate else None
        if error:
            problems.append(f"'{spec.name}': {error}")
        resolved[spec.name] = value
    if problems:
        raise ParameterError("invalid parameters: " + "; ".join(problems))
    return resolved


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        return not default or all(isinstance(v, type(default[0])) or
                                  (isinstance(default[0], float) and isinstance(v, int)) for v in value)
    return isinstance(value, type(default)) and (isinstance(value, bool) == isinstance(default, bool))


FIXED_AT_START_UP = "parameters are fixed at start-up (restart the node with new values)"


def declare_and_validate(node: Any, specs: Sequence[ParameterSpec]) -> dict[str, Any]:
    """Declares ``specs`` read-only on an rclpy node with their descriptions and returns validated values.

    From then on every ``set_parameters`` on the node, ``use_sim_time`` included, is refused.
    """
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

    for spec in specs:
        node.declare_parameter(spec.name, spec.default,
                               ParameterDescriptor(description=spec.description, read_only=True))
    values = {spec.name: node.get_parameter(spec.name).value for spec in specs}
    resolved = validate_values(specs, values)

    def refuse_changes(parameters: list) -> SetParametersResult:
        names = ", ".join(parameter.name for parameter in parameters)
        return SetParametersResult(successful=False, reason=f"refused to set {names}: {FIXED_AT_START_UP}")

    node.add_on_set_parameters_callback(refuse_changes)
    return resolved
