"""Shared by every package's tests, whether pytest runs from the repository root
(``./scripts/test``) or from a package folder (``colcon test``)."""
import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: starts real ROS nodes as separate processes")


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module's tests: small ops run much faster on one thread of a
    shared 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
