"""DDS security (SROS2) with the ROS 2 wheels this suite installs, measured on the real controller.

The PyPI Fast DDS is built without the DDS-Security plugins, so a node with security enabled
cannot be created at all (the README quotes the error). These tests keep that statement true:
the day the wheels gain the plugins, the first one fails and asks for the real test (a node
without keys gets no goal accepted). What holds either way: with the split deployment's
``Enforce`` strategy a controller whose keys are missing refuses to start instead of running
unprotected.
"""
import time

import pytest
from ros_test_harness import launch, logs

from openhelix_ros.security import create_keystore

pytestmark = pytest.mark.integration
EXIT_TIMEOUT_S = 120.0
NO_SECURITY_PLUGINS = "This Fast DDS version doesn't have the security libraries"


def run_controller_until_exit(environment, log_directory):
    """Starts the controller of sim.launch.xml (enclave /openhelix/controller); its exit code
    and log, or None as the code when it is still running after EXIT_TIMEOUT_S."""
    processes = launch({"controller"}, environment, log_directory)
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while time.monotonic() < deadline and not processes.exited():
        time.sleep(0.2)
    code = processes.exited().get("controller")
    processes.stop()
    return code, logs(processes)["controller"]


def secure_environment(ros_domain, keystore, strategy):
    return {**ros_domain, "ROS_SECURITY_KEYSTORE": str(keystore), "ROS_SECURITY_ENABLE": "true",
            "ROS_SECURITY_STRATEGY": strategy}


def test_pypi_fast_dds_has_no_security_plugins(ros_domain, tmp_path):
    keystore = tmp_path / "keystore"
    create_keystore(keystore, domain_id=int(ros_domain["ROS_DOMAIN_ID"]))
    code, log = run_controller_until_exit(secure_environment(ros_domain, keystore, "Enforce"), tmp_path / "logs")
    if code == 0 or code is None:
        pytest.fail("the controller started with DDS security enforced: this Fast DDS has the security plugins. "
                    "Replace this test with one that shows a node without keys gets no goal accepted, and update "
                    "the README's split deployment section.\n" + log)
    # rcl found every file of the enclave; the middleware is what refuses
    assert "Found security directory" in log and "enclaves/openhelix/controller" in log, log
    assert NO_SECURITY_PLUGINS in log, log


def test_enforce_refuses_to_run_without_keys(ros_domain, tmp_path):
    missing = tmp_path / "no_keystore"
    code, log = run_controller_until_exit(secure_environment(ros_domain, missing, "Enforce"), tmp_path / "enforce")
    assert code not in (0, None), log
    assert f"directory '{missing}/enclaves/openhelix/controller' does not exist" in log, log
