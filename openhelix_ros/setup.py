from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "openhelix_ros"
# launch/ and config/ live at the repository root (the suite's fixed layout) and are
# installed into this package's share directory, where `ros2 launch` and the nodes look.
REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_files(folder: str, pattern: str) -> list[str]:
    return sorted(f"../{folder}/{path.name}" for path in (REPO_ROOT / folder).glob(pattern))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", repo_files("launch", "*.launch.xml")),
        (f"share/{PACKAGE}/config", repo_files("config", "*.yaml") + repo_files("config", "*.xml")
                                    + repo_files("config", "*.env")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="openhelix-ros maintainers",
    maintainer_email="maintainers@openhelix-ros.dev",
    description="ROS 2 planner (System 2) and controller (System 1) nodes of OpenHelix.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "planner = openhelix_ros.planner_node:main",
            "controller = openhelix_ros.controller_node:main",
            "openhelix = openhelix_ros.cli:main",
            "recorder = openhelix_ros.bags.recorder_node:main",
            "bag_player = openhelix_ros.bags.player_node:main",
        ],
    },
)
