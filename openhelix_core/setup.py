from setuptools import find_packages, setup

PACKAGE = "openhelix_core"

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
    description="OpenHelix models, policy and evaluation logic (no ROS imports).",
    license="MIT",
)
