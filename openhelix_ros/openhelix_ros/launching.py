"""Runs ROS 2 XML launch files without the ``launch`` package.

``ros2 launch`` is the tool to use where a full ROS 2 install exists. Where it does not (this
suite installs ROS 2 from PyPI wheels, which have no ``launch``), this module reads the same
``launch/*.launch.xml`` files and starts their nodes as processes. It understands the subset
the suite's launch files use: ``<arg>``, ``<node pkg exec name namespace output args ros_args>``
with ``<param from=...>``, ``<param name value>`` and ``<remap from to>``, and the substitutions
``$(var NAME)``, ``$(find-pkg-share PKG)`` and ``$(env NAME [DEFAULT])``. Anything else is an
error naming the element, never silently ignored.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory

_SUBSTITUTION = re.compile(r"\$\((?P<kind>[a-z-]+)(?P<args>(?:\s+[^)\s]+)*)\s*\)")
_NODE_ATTRIBUTES = {"pkg", "exec", "name", "namespace", "output", "args", "ros_args"}


class LaunchError(ValueError):
    """A launch file that cannot be run as written; the text names the file and element."""


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a node's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class NodeDescription:
    package: str
    executable: str
    name: str
    namespace: str = ""
    parameter_files: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    ros_arguments: list[str] = field(default_factory=list)

    def executable_path(self) -> Path:
        try:
            prefix = get_package_prefix(self.package)
        except PackageNotFoundError as error:
            raise LaunchError(f"package '{self.package}' is not installed (source the workspace)") from error
        path = Path(prefix) / "lib" / self.package / self.executable
        if not path.exists():
            raise LaunchError(f"package '{self.package}' has no executable '{self.executable}' ({path})")
        return path

    def command(self) -> list[str]:
        command = [str(self.executable_path()), *self.arguments, "--ros-args", *self.ros_arguments,
                   "-r", f"__node:={self.name}"]
        if self.namespace:
            command += ["-r", f"__ns:={self.namespace}"]
        for parameter_file in self.parameter_files:
            command += ["--params-file", parameter_file]
        for name, value in self.parameters.items():
            command += ["-p", parameter_override(name, value)]
        for source, target in self.remappings:
            command += ["-r", f"{source}:={target}"]
        return command


def parameter_override(name: str, value: str) -> str:
    """``name:=value`` for the command line. rcl reads the value as YAML and rejects an empty
    one, so an empty value is passed as ``''``: an empty string, as ``ros2 launch`` passes it."""
    return f"{name}:={value if value else repr('')}"


def _substitute(text: str, variables: Mapping[str, str], where: str) -> str:
    def replace(match: re.Match) -> str:
        kind, args = match.group("kind"), match.group("args").split()
        if kind == "var" and len(args) == 1:
            if args[0] not in variables:
                raise LaunchError(f"{where}: $(var {args[0]}) has no value (declare it with <arg>)")
            return variables[args[0]]
        if kind == "find-pkg-share" and len(args) == 1:
            try:
                return get_package_share_directory(args[0])
            except PackageNotFoundError as error:
                raise LaunchError(f"{where}: package '{args[0]}' is not installed") from error
        if kind == "env" and 1 <= len(args) <= 2:
            value = os.environ.get(args[0], args[1] if len(args) == 2 else None)
            if value is None:
                raise LaunchError(f"{where}: environment variable {args[0]} is not set")
            return value
        raise LaunchError(f"{where}: unsupported substitution '{match.group(0)}'")
    return _SUBSTITUTION.sub(replace, text)


def parse_launch_file(path: str | Path, arguments: Mapping[str, str] | None = None) -> list[NodeDescription]:
    """Returns the nodes the file starts, with substitutions resolved."""
    path = Path(path)
    root = ElementTree.parse(path).getroot()
    if root.tag != "launch":
        raise LaunchError(f"{path}: root element is <{root.tag}>, expected <launch>")
    arguments = dict(arguments or {})
    declared = {element.get("name") for element in root.iter("arg")}
    unknown = sorted(set(arguments) - declared)
    if unknown:
        raise LaunchError(f"{path}: no <arg> named {unknown}; it declares {sorted(declared)}")
    variables: dict[str, str] = {}
    nodes = []
    for element in root:
        where = f"{path.name}:<{element.tag} {' '.join(f'{k}={v!r}' for k, v in element.attrib.items())}>"
        if element.tag == "arg":
            name = element.get("name")
            if name in arguments:
                variables[name] = arguments[name]
            elif "default" in element.attrib:
                variables[name] = _substitute(element.get("default"), variables, where)
            else:
                raise LaunchError(f"{where}: argument '{name}' has no default and was not given")
        elif element.tag == "node":
            nodes.append(_parse_node(element, variables, where))
        else:
            raise LaunchError(f"{where}: element <{element.tag}> is not supported without ros2 launch")
    return nodes


def _parse_node(element: ElementTree.Element, variables: Mapping[str, str], where: str) -> NodeDescription:
    unsupported = set(element.attrib) - _NODE_ATTRIBUTES
    if unsupported:
        raise LaunchError(f"{where}: unsupported node attributes {sorted(unsupported)}")
    def value(text: str) -> str:
        return _substitute(text, variables, where)

    node = NodeDescription(package=value(element.get("pkg", "")), executable=value(element.get("exec", "")),
                           name=value(element.get("name", element.get("exec", ""))),
                           namespace=value(element.get("namespace", "")),
                           arguments=value(element.get("args", "")).split(),
                           ros_arguments=value(element.get("ros_args", "")).split())
    if not node.package or not node.executable:
        raise LaunchError(f"{where}: <node> needs pkg and exec")
    for child in element:
        if child.tag == "param" and "from" in child.attrib:
            parameter_file = value(child.get("from"))
            if not Path(parameter_file).is_file():
                raise LaunchError(f"{where}: parameter file {parameter_file} does not exist")
            node.parameter_files.append(parameter_file)
        elif child.tag == "param" and {"name", "value"} <= set(child.attrib):
            node.parameters[value(child.get("name"))] = value(child.get("value"))
        elif child.tag == "remap":
            node.remappings.append((value(child.get("from")), value(child.get("to"))))
        else:
            raise LaunchError(f"{where}: child <{child.tag}> is not supported without ros2 launch")
    return node


class LaunchedProcesses:
    """The processes of one launch; stops them all (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, nodes: list[NodeDescription], log_directory: Path | None = None,
                 environment: Mapping[str, str] | None = None) -> None:
        self.nodes = nodes
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_files: dict[str, Path] = {}
        env = {**os.environ, **(environment or {})}
        for node in nodes:
            if log_directory is None:
                self.processes[node.name] = subprocess.Popen(node.command(), env=env, start_new_session=True)
                continue
            log_directory.mkdir(parents=True, exist_ok=True)
            self.log_files[node.name] = log_directory / f"{node.name}.log"
            with open(self.log_files[node.name], "wb") as output:
                self.processes[node.name] = subprocess.Popen(node.command(), stdout=output, stderr=subprocess.STDOUT,
                                                             env=env, start_new_session=True)

    def exited(self) -> dict[str, int]:
        return {name: code for name, process in self.processes.items() if (code := process.poll()) is not None}

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """Stops every process still running; returns each process's exit code."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.processes.values() if p.poll() is None]
            if not running:
                break
            for process in running:
                os.killpg(process.pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(p.poll() is None for p in running):
                time.sleep(0.05)
        return {name: process.wait() for name, process in self.processes.items()}
