"""Each integration test gets its own ROS domain, so parallel runs and a demo never cross-talk."""
import pytest
import rclpy

from openhelix_ros.domains import isolated_domain_id


@pytest.fixture
def ros_domain():
    domain = isolated_domain_id()
    rclpy.init(domain_id=domain)
    yield {"ROS_DOMAIN_ID": str(domain)}
    rclpy.try_shutdown()
