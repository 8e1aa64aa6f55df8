"""Shared by every package's tests, whether pytest runs from the repository root
(``./scripts/test``) or from a package folder (``colcon test``)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: starts real ROS nodes as separate processes")
