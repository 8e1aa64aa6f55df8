"""package.xml files are valid and declare every ROS package their Python code imports."""
import ast
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
PYTHON_PACKAGES = ("openhelix_core", "openhelix_sim", "openhelix_ros", "sim_bridge")
ROS_MODULES = {"rclpy", "rcl_interfaces", "ament_index_python", "builtin_interfaces", "std_msgs", "sensor_msgs",
               "geometry_msgs", "trajectory_msgs", "diagnostic_msgs", "lifecycle_msgs", "visualization_msgs",
               "openhelix_msgs", "openhelix_core", "openhelix_sim", "openhelix_ros", "sim_bridge", "message_filters",
               "tf2_ros",
               "cv_bridge", "rosbag2_py", "launch", "launch_ros"}


def imported_top_level_modules(package_dir: Path) -> set[str]:
    modules = set()
    for source in (package_dir / package_dir.name).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("name", ["openhelix_msgs", *PYTHON_PACKAGES])
def test_manifest_is_valid_format_3(name):
    package = parse_package(REPO / name / "package.xml")
    package.validate()
    assert package.package_format == 3 and package.name == name


@pytest.mark.parametrize("name", PYTHON_PACKAGES)
def test_every_imported_ros_package_is_declared(name):
    package = parse_package(REPO / name / "package.xml")
    declared = {d.name for d in package.build_depends + package.exec_depends + package.build_export_depends}
    used = (imported_top_level_modules(REPO / name) & ROS_MODULES) - {name}
    assert used <= declared, f"{name}/package.xml does not declare {sorted(used - declared)}"


def test_simulator_package_is_pure_python_on_top_of_core():
    """openhelix_sim imports no ROS package and depends on openhelix_core alone: openhelix_ros's CLI
    reads its task set and sim_bridge wraps it in a node, so a dependency back on either would be
    a cycle colcon cannot order."""
    used = imported_top_level_modules(REPO / "openhelix_sim") & ROS_MODULES
    assert used == {"openhelix_core"}, f"openhelix_sim imports ROS packages {sorted(used - {'openhelix_core'})}"
    package = parse_package(REPO / "openhelix_sim" / "package.xml")
    declared = {d.name for d in package.build_depends + package.exec_depends + package.build_export_depends}
    assert declared & ROS_MODULES == {"openhelix_core"}
