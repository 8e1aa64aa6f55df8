"""Each integration test gets its own ROS domain, so parallel runs and a demo never cross-talk."""
import os
import time

import pytest
import rclpy


@pytest.fixture
def ros_domain():
    domain = 1 + (os.getpid() + time.monotonic_ns()) % 100
    rclpy.init(domain_id=domain)
    yield {"ROS_DOMAIN_ID": str(domain)}
    rclpy.try_shutdown()
