from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "openhelix_bringup"
HERE = Path(__file__).resolve().parent


def files(folder: str, *patterns: str) -> list[str]:
    return sorted(str(path.relative_to(HERE)) for pattern in patterns for path in (HERE / folder).glob(pattern))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", files("launch", "*.launch.xml")),
        (f"share/{PACKAGE}/config", files("config", "*.yaml", "*.xml", "*.env", "*.rviz", "*.json")),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="openhelix-ros maintainers",
    maintainer_email="maintainers@openhelix-ros.dev",
    description="Launch files, parameter files and the openhelix command of openhelix-ros.",
    license="MIT",
    entry_points={"console_scripts": ["openhelix = openhelix_bringup.cli:main"]},
)
