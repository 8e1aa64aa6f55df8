from setuptools import find_packages, setup

PACKAGE = "openhelix_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="openhelix-ros maintainers",
    maintainer_email="maintainers@openhelix-ros.dev",
    description="ROS 2 planner (System 2) and controller (System 1) nodes of OpenHelix.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "planner = openhelix_ros.planner_node:main",
            "controller = openhelix_ros.controller_node:main",
            "recorder = openhelix_ros.bags.recorder_node:main",
            "bag_player = openhelix_ros.bags.player_node:main",
        ],
    },
)
