"""Where this package's launch and parameter files are installed."""
from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory

from openhelix_ros.launching import LaunchError

PACKAGE = "openhelix_bringup"


def installed_config_dir() -> Path:
    """The parameter files of the installed package (``share/openhelix_bringup/config``)."""
    return Path(get_package_share_directory(PACKAGE)) / "config"


def resolve_launch_file(name: str) -> Path:
    """A path as given, or the name of a launch file installed in ``share/openhelix_bringup/launch``."""
    path = Path(name)
    if path.is_file():
        return path
    installed = Path(get_package_share_directory(PACKAGE)) / "launch" / name
    if installed.is_file():
        return installed
    raise LaunchError(f"no launch file '{name}' here or in {PACKAGE}/launch")


def write_evaluation_config(directory: Path, source_dir: str | None, checkpoint: str,
                            bridge: dict | None = None, controller: dict | None = None) -> Path:
    """Copies the simulation parameter files to ``directory``, pointing the planner and the
    controller at a trainer checkpoint (``<checkpoint>/system2``, ``<checkpoint>/system1``) and
    overriding the given bridge and controller parameters."""
    import yaml

    source = Path(source_dir) if source_dir else installed_config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    system1 = {"checkpoint": str(Path(checkpoint) / "system1")} if checkpoint else {}
    edits = {"planner.yaml": ("planner", {"checkpoint": str(Path(checkpoint) / "system2")} if checkpoint else {}),
             "controller_sim.yaml": ("controller", {**system1, **(controller or {})}),
             "sim_bridge.yaml": ("sim_bridge", dict(bridge or {}))}
    if checkpoint:
        for part in ("system1", "system2"):
            if not (Path(checkpoint) / part).is_dir():
                raise LaunchError(f"checkpoint {checkpoint} has no {part}/ directory (expected a trainer "
                                  f"checkpoint such as runs/x/stage2/final)")
    for name, (node, values) in edits.items():
        data = yaml.safe_load((source / name).read_text())
        data[node]["ros__parameters"].update(values)
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory
