"""package.xml files are valid, declare every package their code imports, launches or runs, and
the packages of this repository depend on each other without a cycle."""
import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
PYTHON_PACKAGES = ("openhelix_core", "openhelix_sim", "openhelix_ros", "sim_bridge", "openhelix_bringup")
REPO_PACKAGES = ("openhelix_msgs", *PYTHON_PACKAGES)
ROS_MODULES = {"rclpy", "rcl_interfaces", "ament_index_python", "builtin_interfaces", "std_msgs", "sensor_msgs",
               "geometry_msgs", "trajectory_msgs", "diagnostic_msgs", "lifecycle_msgs", "visualization_msgs",
               "message_filters", "tf2_ros", "tf2_msgs", "cv_bridge", "rosbag2_py", "launch", "launch_ros", *REPO_PACKAGES}
_FIND_PKG_SHARE = re.compile(r"\$\(find-pkg-share\s+([A-Za-z0-9_]+)\s*\)")


def declared_dependencies(name: str) -> set[str]:
    package = parse_package(REPO / name / "package.xml")
    return {d.name for d in package.build_depends + package.exec_depends + package.build_export_depends}


def _python_sources(name: str):
    return sorted((REPO / name / name).rglob("*.py"))


def imported_top_level_modules(name: str) -> set[str]:
    modules = set()
    for source in _python_sources(name):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def run_modules(name: str) -> set[str]:
    """Top-level packages this package's code runs as ``python -m PACKAGE...`` (a list literal
    holding ``"-m"`` followed by the module): a dependency as real as an import."""
    modules = set()
    for source in _python_sources(name):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.List):
                values = [item.value if isinstance(item, ast.Constant) else None for item in node.elts]
                modules.update(str(after).split(".")[0] for before, after in zip(values, values[1:])
                               if before == "-m" and isinstance(after, str))
    return modules


def launched_packages(name: str) -> set[str]:
    """Packages whose nodes or share directories this package's launch files use."""
    packages = set()
    for launch_file in sorted((REPO / name / "launch").glob("*.launch.xml")):
        text = launch_file.read_text()
        packages.update(_FIND_PKG_SHARE.findall(text))
        packages.update(node.get("pkg") for node in ElementTree.fromstring(text).iter("node"))
    return packages


@pytest.mark.parametrize("name", REPO_PACKAGES)
def test_manifest_is_valid_format_3(name):
    package = parse_package(REPO / name / "package.xml")
    package.validate()
    assert package.package_format == 3 and package.name == name


@pytest.mark.parametrize("name", PYTHON_PACKAGES)
def test_every_imported_launched_or_run_package_is_declared(name):
    declared = declared_dependencies(name)
    for what, used in (("imports", imported_top_level_modules(name) & ROS_MODULES),
                       ("launches", launched_packages(name)),
                       ("runs with python -m", run_modules(name) & ROS_MODULES)):
        missing = sorted(used - declared - {name})
        assert not missing, f"{name} {what} {missing} but its package.xml does not declare them"


def test_launch_files_and_parameter_files_belong_to_bringup():
    """Only openhelix_bringup starts things; the top-level launch/ and config/ are its folders."""
    for name in REPO_PACKAGES:
        if name != "openhelix_bringup":
            assert not (REPO / name / "launch").exists() and not (REPO / name / "config").exists(), name
    for folder in ("launch", "config"):
        assert (REPO / folder).resolve() == (REPO / "openhelix_bringup" / folder).resolve()


def test_repository_packages_depend_on_each_other_without_a_cycle():
    graph = {name: declared_dependencies(name) & set(REPO_PACKAGES) for name in REPO_PACKAGES}
    order, visiting = [], []

    def visit(name):
        if name in order:
            return
        assert name not in visiting, f"package dependency cycle: {' -> '.join(visiting[visiting.index(name):] + [name])}"
        visiting.append(name)
        for dependency in sorted(graph[name]):
            visit(dependency)
        visiting.pop()
        order.append(name)

    for name in REPO_PACKAGES:
        visit(name)
    # the layering the README describes: each package only builds on the ones before it
    assert order.index("openhelix_core") < order.index("openhelix_sim") < order.index("sim_bridge")
    assert order.index("openhelix_ros") < order.index("sim_bridge") < order.index("openhelix_bringup")
    assert graph["openhelix_core"] == set() and graph["openhelix_bringup"] == set(REPO_PACKAGES) - {"openhelix_bringup"}


def test_simulator_package_is_pure_python_on_top_of_core():
    """openhelix_sim imports no ROS package and depends on openhelix_core alone: sim_bridge wraps
    it in a node and the openhelix command reads its task set."""
    used = imported_top_level_modules("openhelix_sim") & ROS_MODULES
    assert used == {"openhelix_core"}, f"openhelix_sim imports ROS packages {sorted(used - {'openhelix_core'})}"
    assert declared_dependencies("openhelix_sim") & ROS_MODULES == {"openhelix_core"}
