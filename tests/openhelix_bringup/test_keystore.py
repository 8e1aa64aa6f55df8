"""The SROS2 keystore (openhelix_ros.security): files rcl reads, certificate chains, signatures
that verify against the permissions CA, and permissions that grant exactly the documented access."""
import datetime
import fnmatch
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from openhelix_bringup.cli import main
from openhelix_ros import topics
from openhelix_ros.security import (
    CONTROLLER,
    ENCLAVES,
    OPERATOR,
    PLANNER,
    SIM_BRIDGE,
    KeystoreError,
    create_keystore,
    dds_reply,
    dds_request,
    dds_topic,
)

# rmw_security_common's get_security_files: the files an enclave directory must hold.
RCL_FILES = ("identity_ca.cert.pem", "cert.pem", "key.pem", "permissions_ca.cert.pem", "governance.p7s",
             "permissions.p7s")
NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.timezone.utc)
GOAL = dds_topic(topics.GOAL_EMBEDDING)
CLEAR_ESTOP = "/controller/clear_estop"
CONTROLLER_SERVICES = ("/controller/engage_estop", CLEAR_ESTOP, "/controller/set_parameters",
                       "/controller/set_parameters_atomically", "/controller/get_parameters",
                       "/controller/change_state")
CAMERA_TOPICS = [dds_topic(name(camera)) for camera in ("static", "gripper")
                 for name in (topics.camera_color, topics.camera_depth, topics.camera_info)]


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keystore")
    create_keystore(directory, domain_id=42, valid_days=30, heartbeat_topic="/openhelix/deadman", now=NOW)
    return directory


def load_certificate(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


class Grant:
    """An enclave's permissions as DDS-Security's builtin access control evaluates them: the
    first rule (in document order) whose domain and topic expression match decides, otherwise
    the default. Topic expressions are fnmatch patterns, as Fast DDS matches them."""

    def __init__(self, path):
        self.root = ElementTree.parse(path).getroot()
        (self.grant,) = self.root.findall("permissions/grant")

    def rules(self):
        return [element for element in self.grant if element.tag in ("allow_rule", "deny_rule")]

    def allows(self, action: str, topic: str, domain: int = 42) -> bool:
        for rule in self.rules():
            if str(domain) not in [d.text for d in rule.findall("domains/id")]:
                continue
            patterns = [t.text for t in rule.findall(f"{action}/topics/topic")]
            if any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns):
                return rule.tag == "allow_rule"
        return self.grant.findtext("default") == "ALLOW"


@pytest.fixture(scope="module")
def grants(keystore):
    return {enclave: Grant(keystore / "enclaves" / enclave.lstrip("/") / "permissions.xml") for enclave in ENCLAVES}


def test_every_enclave_has_the_files_rcl_reads(keystore):
    assert (keystore / "enclaves" / "governance.p7s").is_file()  # where `ros2 security` looks too
    for name in ("identity_ca", "permissions_ca"):
        assert (keystore / "public" / f"{name}.cert.pem").is_file()
        assert stat.S_IMODE((keystore / "private" / f"{name}.key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((keystore / "private").stat().st_mode) == 0o700
    for enclave in ENCLAVES:
        directory = keystore / "enclaves" / enclave.lstrip("/")
        for name in RCL_FILES:
            assert (directory / name).is_file() and not (directory / name).is_symlink(), f"{enclave}: {name}"
        assert stat.S_IMODE((directory / "key.pem").stat().st_mode) == 0o600
    assert sorted(p.name for p in (keystore / "enclaves" / "openhelix").iterdir()) == [
        "controller", "operator", "planner", "sim_bridge"]


def test_enclave_certificates_chain_to_the_identity_ca(keystore):
    identity_ca = load_certificate(keystore / "public" / "identity_ca.cert.pem")
    permissions_ca = load_certificate(keystore / "public" / "permissions_ca.cert.pem")
    assert identity_ca.subject != permissions_ca.subject
    for ca in (identity_ca, permissions_ca):
        ca.verify_directly_issued_by(ca)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for enclave in ENCLAVES:
        directory = keystore / "enclaves" / enclave.lstrip("/")
        certificate = load_certificate(directory / "cert.pem")
        certificate.verify_directly_issued_by(identity_ca)
        with pytest.raises(ValueError, match="[Ii]ssuer"):
            certificate.verify_directly_issued_by(permissions_ca)
        assert certificate.subject.rfc4514_string() == f"CN={enclave}"
        assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), password=None)
        assert key.public_key() == certificate.public_key()
        assert (directory / "identity_ca.cert.pem").read_bytes() == (keystore / "public" / "identity_ca.cert.pem").read_bytes()
        assert certificate.not_valid_before_utc <= NOW < certificate.not_valid_after_utc
        assert certificate.not_valid_after_utc > NOW + datetime.timedelta(days=29)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_signed_documents_verify_against_the_permissions_ca_only(keystore, tmp_path):
    def verify(signed, ca):
        return subprocess.run(["openssl", "smime", "-verify", "-text", "-in", str(signed), "-CAfile", str(ca)],
                              capture_output=True)

    public = keystore / "public"
    for enclave in ENCLAVES:
        directory = keystore / "enclaves" / enclave.lstrip("/")
        for signed, source in (("permissions.p7s", directory / "permissions.xml"),
                               ("governance.p7s", keystore / "enclaves" / "governance.xml")):
            result = verify(directory / signed, public / "permissions_ca.cert.pem")
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout.replace(b"\r\n", b"\n") == source.read_bytes()
            assert verify(directory / signed, public / "identity_ca.cert.pem").returncode != 0
    tampered = tmp_path / "tampered.p7s"
    signed = (keystore / "enclaves" / "openhelix" / "controller" / "permissions.p7s").read_bytes()
    tampered.write_bytes(signed.replace(b"<topic>rt/openhelix/trajectory_chunk</topic>",
                                        b"<topic>rt/openhelix/goal_embedding</topic>", 1))
    assert tampered.read_bytes() != signed
    assert verify(tampered, public / "permissions_ca.cert.pem").returncode != 0


def test_only_the_planner_may_publish_goals(grants):
    assert grants[PLANNER].allows("publish", GOAL)
    for enclave in (CONTROLLER, SIM_BRIDGE, OPERATOR):
        assert not grants[enclave].allows("publish", GOAL), enclave
        # refused by an explicit deny rule, not only by the default
        denied = [t.text for rule in grants[enclave].grant.findall("deny_rule") for t in rule.iter("topic")]
        assert GOAL in denied, enclave
    assert grants[CONTROLLER].allows("subscribe", GOAL)


def test_only_the_operator_may_call_controller_services(grants):
    for service in CONTROLLER_SERVICES:
        assert grants[OPERATOR].allows("publish", dds_request(service)), service
        assert grants[OPERATOR].allows("subscribe", dds_reply(service)), service
        for enclave in (PLANNER, CONTROLLER, SIM_BRIDGE):
            assert not grants[enclave].allows("publish", dds_request(service)), (enclave, service)
        # the controller serves them
        assert grants[CONTROLLER].allows("subscribe", dds_request(service)), service
        assert grants[CONTROLLER].allows("publish", dds_reply(service)), service
    assert dds_request(CLEAR_ESTOP) == "rq/controller/clear_estopRequest"
    assert dds_reply(CLEAR_ESTOP) == "rr/controller/clear_estopReply"


def test_each_node_gets_what_it_uses_and_nothing_else(grants):
    controller, planner, sim, operator = grants[CONTROLLER], grants[PLANNER], grants[SIM_BRIDGE], grants[OPERATOR]
    controller_inputs = [*CAMERA_TOPICS, dds_topic(topics.EE_POSE), dds_topic(topics.JOINT_STATES),
                         dds_topic(topics.ESTOP), "rt/openhelix/deadman"]
    assert all(controller.allows("subscribe", topic) for topic in controller_inputs)
    controller_outputs = [dds_topic(name) for name in (topics.TRAJECTORY_CHUNK, topics.POSE_COMMAND,
                                                       topics.GRIPPER_COMMAND, topics.GOAL_AGE, topics.STEPS_PER_GOAL,
                                                       topics.POLICY_POINT_CLOUD, topics.POLICY_MARKERS,
                                                       topics.DIAGNOSTICS)]
    assert all(controller.allows("publish", topic) for topic in controller_outputs)
    assert not any(controller.allows("publish", topic) for topic in controller_inputs)
    for enclave in (PLANNER, SIM_BRIDGE, OPERATOR):
        assert not any(grants[enclave].allows("publish", topic) for topic in controller_outputs[:3]), enclave

    assert planner.allows("subscribe", dds_topic(topics.camera_color("static")))
    assert planner.allows("subscribe", dds_topic(topics.INSTRUCTION))
    assert not planner.allows("publish", dds_topic(topics.INSTRUCTION))
    assert not planner.allows("publish", dds_topic(topics.ESTOP))

    assert all(sim.allows("publish", topic) for topic in
               [*CAMERA_TOPICS, dds_topic(topics.EE_POSE), dds_topic(topics.JOINT_STATES),
                dds_topic(topics.INSTRUCTION), dds_topic(topics.SIM_STATUS)])
    assert sim.allows("subscribe", dds_topic(topics.TRAJECTORY_CHUNK))
    assert not sim.allows("publish", dds_topic(topics.ESTOP))

    assert operator.allows("publish", dds_topic(topics.ESTOP)) and operator.allows("publish", "rt/openhelix/deadman")
    assert all(operator.allows("subscribe", topic) for topic in [GOAL, *controller_outputs, *CAMERA_TOPICS])
    assert not any(operator.allows("publish", topic) for topic in CAMERA_TOPICS)

    # ROS's own topics and each node's services under its own name
    for enclave, node in ((PLANNER, "planner"), (CONTROLLER, "controller"), (SIM_BRIDGE, "sim_bridge")):
        grant = grants[enclave]
        for action, topic in (("publish", "rt/rosout"), ("publish", "ros_discovery_info"),
                              ("subscribe", "ros_discovery_info"), ("publish", "rt/parameter_events"),
                              ("publish", f"rt/{node}/transition_event"),
                              ("subscribe", f"rq/{node}/get_type_descriptionRequest")):
            assert grant.allows(action, topic), (enclave, action, topic)
        assert not grant.allows("subscribe", "rt/some/other_topic"), enclave
    assert not grants[PLANNER].allows("publish", "rr/controller/clear_estopReply")
    # another domain gets nothing
    assert not planner.allows("publish", GOAL, domain=0)


def test_documents_follow_the_dds_security_schemas(keystore, grants):
    governance = ElementTree.parse(keystore / "enclaves" / "governance.xml").getroot()
    (rule,) = governance.findall("domain_access_rules/domain_rule")
    assert [child.tag for child in rule] == [
        "domains", "allow_unauthenticated_participants", "enable_join_access_control", "discovery_protection_kind",
        "liveliness_protection_kind", "rtps_protection_kind", "topic_access_rules"]
    assert rule.findtext("domains/id") == "42"
    assert rule.findtext("allow_unauthenticated_participants") == "false"
    assert rule.findtext("enable_join_access_control") == "true"
    (topic_rule,) = rule.findall("topic_access_rules/topic_rule")
    assert [(child.tag, child.text) for child in topic_rule] == [
        ("topic_expression", "*"), ("enable_discovery_protection", "true"), ("enable_liveliness_protection", "true"),
        ("enable_read_access_control", "true"), ("enable_write_access_control", "true"),
        ("metadata_protection_kind", "ENCRYPT"), ("data_protection_kind", "ENCRYPT")]
    for enclave, grant in grants.items():
        tags = [child.tag for child in grant.grant]
        assert tags[:2] == ["subject_name", "validity"] and tags[-1] == "default", enclave
        # protected publications are denied before anything is allowed
        assert tags[2] == "deny_rule" and set(tags[3:-1]) == {"allow_rule"}, enclave
        assert grant.grant.get("name") == enclave and grant.grant.findtext("subject_name") == f"CN={enclave}"
        not_before = datetime.datetime.fromisoformat(grant.grant.findtext("validity/not_before"))
        not_after = datetime.datetime.fromisoformat(grant.grant.findtext("validity/not_after"))
        assert not_before <= NOW.replace(tzinfo=None) < not_after
        for rule in grant.rules():
            children = [child.tag for child in rule]
            assert children[0] == "domains" and children[1:] in (["publish"], ["subscribe"], ["publish", "subscribe"])


def test_domain_is_configurable(tmp_path):
    create_keystore(tmp_path, domain_id=7, enclaves=(PLANNER,), now=NOW)
    grant = Grant(tmp_path / "enclaves" / "openhelix" / "planner" / "permissions.xml")
    assert grant.allows("publish", GOAL, domain=7) and not grant.allows("publish", GOAL, domain=42)
    governance = ElementTree.parse(tmp_path / "enclaves" / "governance.xml").getroot()
    assert governance.findtext("domain_access_rules/domain_rule/domains/id") == "7"
    assert not (tmp_path / "enclaves" / "openhelix" / "controller").exists()


def test_bad_requests_name_the_cause(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(KeystoreError, match="not an empty directory"):
        create_keystore(tmp_path / "used")
    with pytest.raises(KeystoreError, match=r"domain id 233 is outside 0\.\.232"):
        create_keystore(tmp_path / "a", domain_id=233)
    with pytest.raises(KeystoreError, match="'deadman' is not an absolute ROS topic name"):
        create_keystore(tmp_path / "b", heartbeat_topic="deadman")
    with pytest.raises(KeystoreError, match="/openhelix/robot"):
        create_keystore(tmp_path / "c", enclaves=("/openhelix/robot",))
    assert not any((tmp_path / name).exists() for name in "abc")


def test_cli_writes_the_keystore_and_refuses_to_overwrite_it(tmp_path, capsys):
    assert main(["security-keystore", str(tmp_path / "ks"), "--domain-id", "5"]) == 0
    assert "/openhelix/operator" in capsys.readouterr().out
    assert Grant(tmp_path / "ks" / "enclaves" / "openhelix" / "operator" / "permissions.xml").allows(
        "publish", dds_request(CLEAR_ESTOP), domain=5)
    before = (tmp_path / "ks" / "private" / "identity_ca.key.pem").read_bytes()
    assert main(["security-keystore", str(tmp_path / "ks")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "ks" / "private" / "identity_ca.key.pem").read_bytes() == before
