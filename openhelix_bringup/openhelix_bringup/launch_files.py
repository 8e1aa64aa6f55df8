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
