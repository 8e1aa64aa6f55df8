from setuptools import find_packages, setup

PACKAGE = "sim_bridge"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="openhelix-ros maintainers",
    maintainer_email="maintainers@openhelix-ros.dev",
    description="ROS node of the OpenHelix play-table simulator (openhelix_sim).",
    license="MIT",
    entry_points={
        "console_scripts": [
            "sim_bridge = sim_bridge.sim_bridge_node:main",
            "demo_robot = sim_bridge.demo_robot_node:main",
        ],
    },
)
