"""A DDS-Security (SROS2) keystore that says which machine may command the robot.

In the split deployment the planner and the controller talk over the subnet. Without DDS
security any host that joins the ROS domain can publish goals, call
``/controller/clear_estop`` or set the controller's parameters. :func:`create_keystore`
writes the files rcl hands to the middleware when ``ROS_SECURITY_ENABLE=true``: an identity
CA and a permissions CA, and per enclave a certificate, a private key and signed permissions.
The governance document (signed, shared by all enclaves) turns on authentication (hosts
without a certificate from the identity CA are not admitted), encryption of discovery and
data, and access control on every topic.

Layout (the one ``ros2 security`` writes and rcl reads; see rmw_security_common's
``get_security_files``)::

    DIR/public/{identity_ca,permissions_ca}.cert.pem
    DIR/private/{identity_ca,permissions_ca}.key.pem   keep these off the robots
    DIR/enclaves/governance.xml, governance.p7s
    DIR/enclaves/openhelix/<name>/cert.pem, key.pem, identity_ca.cert.pem,
        permissions_ca.cert.pem, governance.p7s, permissions.xml, permissions.p7s

Enclaves and what their permissions grant (DDS names: ``rt`` + topic, ``rq`` + service +
``Request``, ``rr`` + service + ``Reply``, as rmw_fastrtps mangles them):

* ``/openhelix/planner``: the only enclave that may publish ``/openhelix/goal_embedding``;
  reads the cameras and the instruction.
* ``/openhelix/controller``: reads its inputs (cameras, EE pose, joint states, goals, e-stop,
  the deadman topic when given) and publishes chunks, commands and diagnostics. It serves its
  services (e-stop, parameters, lifecycle) but may not call them.
* ``/openhelix/sim_bridge``: the robot side's publisher of cameras and robot state (the
  simulator, or the camera and arm drivers on a real robot) and the instruction; reads chunks.
* ``/openhelix/operator``: the only enclave that may call the controller's services (clear
  the e-stop, set parameters, change the lifecycle state); publishes the e-stop, the
  instruction and the deadman topic; may read every topic.

Each grant first denies, explicitly, the protected publications the enclave does not own
(goal topic, controller service requests), then allows what the node needs, and denies
everything else by default. Besides its data every node needs ROS's own topics: ``rosout``,
``parameter_events``, ``ros_discovery_info``, ``clock`` and the topics and services under its
node name (parameter, lifecycle and type-description services, lifecycle transition events).
Topics outside these lists (a remapped camera namespace, a different goal topic) need the
permissions edited and re-signed.
"""
from __future__ import annotations

import datetime
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from openhelix_ros import topics

try:  # needed only to write a keystore; the rest of the suite runs without it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs7
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - exercised only where the package is missing
    x509 = None

PLANNER = "/openhelix/planner"
CONTROLLER = "/openhelix/controller"
SIM_BRIDGE = "/openhelix/sim_bridge"
OPERATOR = "/openhelix/operator"
ENCLAVES = (PLANNER, CONTROLLER, SIM_BRIDGE, OPERATOR)
# Node names of the launch files; a node's own topics and services live under its name.
NODE_NAMES = {PLANNER: "planner", CONTROLLER: "controller", SIM_BRIDGE: "sim_bridge"}

DISCOVERY_TOPIC = "ros_discovery_info"  # rmw_dds_common's graph topic: no "rt" prefix
DEFAULT_DOMAIN_ID = 42  # config/split_deployment.env
MAX_DOMAIN_ID = 232  # the largest domain id whose ports Fast DDS can compute
DEFAULT_VALID_DAYS = 3650
GOVERNANCE_SCHEMA = "http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_governance.xsd"
PERMISSIONS_SCHEMA = "http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd"
_ROS_NAME = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")


class KeystoreError(ValueError):
    """The keystore cannot be written as asked; the text names the cause."""


def dds_topic(ros_topic: str) -> str:
    """The DDS topic name of a ROS topic (``/a/b`` -> ``rt/a/b``); ``*`` matches any suffix."""
    return "rt" + ros_topic


def dds_request(ros_service: str) -> str:
    """The DDS topic carrying requests to a ROS service (``/a/b`` -> ``rq/a/bRequest``)."""
    return "rq" + ros_service + "Request"


def dds_reply(ros_service: str) -> str:
    """The DDS topic carrying a ROS service's replies (``/a/b`` -> ``rr/a/bReply``)."""
    return "rr" + ros_service + "Reply"


@dataclass(frozen=True)
class Rule:
    """One ``allow_rule`` or ``deny_rule`` of a grant: DDS topic expressions per action."""
    allow: bool
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


def protected_publications() -> dict[str, tuple[str, ...]]:
    """DDS topic expression -> the only enclaves that may publish on it."""
    return {
        dds_topic(topics.GOAL_EMBEDDING): (PLANNER,),
        # every controller service: clear/engage e-stop, parameters, lifecycle transitions
        dds_request(f"/{NODE_NAMES[CONTROLLER]}/*"): (OPERATOR,),
    }


def _node_infrastructure(node_name: str) -> Rule:
    """What an rclpy node named ``node_name`` needs besides its data (see the module doc)."""
    return Rule(True,
                publish=(dds_topic("/rosout"), dds_topic("/parameter_events"), DISCOVERY_TOPIC,
                         dds_topic(f"/{node_name}/*"), dds_reply(f"/{node_name}/*")),
                subscribe=(dds_topic("/parameter_events"), dds_topic("/clock"), DISCOVERY_TOPIC,
                           dds_request(f"/{node_name}/*")))


def enclave_rules(enclave: str, heartbeat_topic: str = "") -> list[Rule]:
    """The ordered rules of ``enclave``'s grant (the first rule that matches decides).

    Args:
        enclave: one of :data:`ENCLAVES`.
        heartbeat_topic: the controller's deadman topic, published by the operator ('' = none).
    """
    if enclave not in ENCLAVES:
        raise KeystoreError(f"unknown enclave '{enclave}'; the keystore has {list(ENCLAVES)}")
    denied = tuple(expression for expression, owners in protected_publications().items() if enclave not in owners)
    rules = [Rule(False, publish=denied)] if denied else []
    cameras = dds_topic("/cameras/*")
    heartbeat = (dds_topic(heartbeat_topic),) if heartbeat_topic else ()
    if enclave == PLANNER:
        rules.append(Rule(True, publish=(dds_topic(topics.GOAL_EMBEDDING), dds_topic(topics.DIAGNOSTICS)),
                          subscribe=(cameras, dds_topic(topics.INSTRUCTION))))
    elif enclave == CONTROLLER:
        rules.append(Rule(True,
                          publish=(dds_topic(topics.TRAJECTORY_CHUNK), dds_topic("/openhelix/command/*"),
                                   dds_topic("/openhelix/controller/*"), dds_topic(topics.DIAGNOSTICS)),
                          subscribe=(cameras, dds_topic(topics.EE_POSE), dds_topic(topics.JOINT_STATES),
                                     dds_topic(topics.GOAL_EMBEDDING), dds_topic(topics.ESTOP), *heartbeat)))
    elif enclave == SIM_BRIDGE:
        rules.append(Rule(True,
                          publish=(cameras, dds_topic(topics.EE_POSE), dds_topic(topics.JOINT_STATES),
                                   dds_topic(topics.INSTRUCTION), dds_topic(topics.DIAGNOSTICS)),
                          subscribe=(dds_topic(topics.TRAJECTORY_CHUNK),)))
    else:
        # Operator tools (ros2 service / param / lifecycle, RViz, a deadman button) have node
        # names not known here, so they may serve and call any service and read any topic.
        rules.append(Rule(True,
                          publish=(dds_topic(topics.ESTOP), dds_topic(topics.INSTRUCTION), *heartbeat,
                                   dds_topic("/rosout"), dds_topic("/parameter_events"), DISCOVERY_TOPIC,
                                   "rq/*", "rr/*"),
                          subscribe=("rt/*", DISCOVERY_TOPIC, "rq/*", "rr/*")))
        return rules
    rules.append(_node_infrastructure(NODE_NAMES[enclave]))
    return rules


def _text_element(parent: ElementTree.Element, tag: str, text: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    element.text = text
    return element


def _document(root: ElementTree.Element) -> bytes:
    ElementTree.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="utf-8") + b"\n"


def _dds_root(schema: str) -> ElementTree.Element:
    return ElementTree.Element("dds", {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                       "xsi:noNamespaceSchemaLocation": schema})


def governance_xml(domain_id: int) -> bytes:
    """Governance for ``domain_id``: only authenticated participants, everything encrypted,
    access control on every topic (the DDS-Security 1.1 governance format)."""
    root = _dds_root(GOVERNANCE_SCHEMA)
    rule = ElementTree.SubElement(ElementTree.SubElement(root, "domain_access_rules"), "domain_rule")
    _text_element(ElementTree.SubElement(rule, "domains"), "id", str(domain_id))
    _text_element(rule, "allow_unauthenticated_participants", "false")
    _text_element(rule, "enable_join_access_control", "true")
    _text_element(rule, "discovery_protection_kind", "ENCRYPT")
    _text_element(rule, "liveliness_protection_kind", "ENCRYPT")
    _text_element(rule, "rtps_protection_kind", "SIGN")
    topic_rule = ElementTree.SubElement(ElementTree.SubElement(rule, "topic_access_rules"), "topic_rule")
    _text_element(topic_rule, "topic_expression", "*")
    for flag in ("enable_discovery_protection", "enable_liveliness_protection", "enable_read_access_control",
                 "enable_write_access_control"):
        _text_element(topic_rule, flag, "true")
    _text_element(topic_rule, "metadata_protection_kind", "ENCRYPT")
    _text_element(topic_rule, "data_protection_kind", "ENCRYPT")
    return _document(root)


def permissions_xml(enclave: str, domain_id: int, not_before: datetime.datetime, not_after: datetime.datetime,
                    heartbeat_topic: str = "") -> bytes:
    """The permissions document of one enclave (DDS-Security 1.1 permissions format); the
    grant's subject is the enclave certificate's subject, ``CN=<enclave>``."""
    root = _dds_root(PERMISSIONS_SCHEMA)
    grant = ElementTree.SubElement(ElementTree.SubElement(root, "permissions"), "grant", {"name": enclave})
    _text_element(grant, "subject_name", f"CN={enclave}")
    validity = ElementTree.SubElement(grant, "validity")
    _text_element(validity, "not_before", not_before.strftime("%Y-%m-%dT%H:%M:%S"))
    _text_element(validity, "not_after", not_after.strftime("%Y-%m-%dT%H:%M:%S"))
    for rule in enclave_rules(enclave, heartbeat_topic):
        element = ElementTree.SubElement(grant, "allow_rule" if rule.allow else "deny_rule")
        _text_element(ElementTree.SubElement(element, "domains"), "id", str(domain_id))
        for action, expressions in (("publish", rule.publish), ("subscribe", rule.subscribe)):
            if expressions:
                listed = ElementTree.SubElement(ElementTree.SubElement(element, action), "topics")
                for expression in expressions:
                    _text_element(listed, "topic", expression)
    _text_element(grant, "default", "DENY")
    return _document(root)


def _require_cryptography() -> None:
    if x509 is None:
        raise KeystoreError("writing a keystore needs the 'cryptography' package (pip install cryptography, "
                            "or apt install python3-cryptography)")


def _certificate(common_name: str, issuer_name, signing_key, not_before, not_after, is_ca: bool):
    """A new P-256 key (DDS-Security's PKI-DH curve) and its certificate, signed by ``signing_key``
    (the new key itself when ``signing_key`` is None: a self-signed CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    constraints = x509.BasicConstraints(ca=True, path_length=1) if is_ca else x509.BasicConstraints(ca=False,
                                                                                                    path_length=None)
    certificate = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(issuer_name or subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before)
                   .not_valid_after(not_after)
                   .add_extension(constraints, critical=is_ca)
                   .sign(signing_key or key, hashes.SHA256()))
    return key, certificate


def sign_smime(document: bytes, certificate, key) -> bytes:
    """``document`` as a detached, text-mode S/MIME signature by ``certificate`` (how the
    DDS-Security builtin plugins expect governance and permissions files)."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(document).add_signer(certificate, key, hashes.SHA256())
    return builder.sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Text, pkcs7.PKCS7Options.DetachedSignature])


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private keys are created 0600 (not chmod-ed afterwards) so they are never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)


def _pem_certificate(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def validate_topic_name(name: str, what: str) -> str:
    """``name`` when it is an absolute ROS topic name, else a KeystoreError naming ``what``."""
    if not _ROS_NAME.match(name):
        raise KeystoreError(f"{what} '{name}' is not an absolute ROS topic name such as /openhelix/deadman")
    return name


def create_keystore(directory: str | Path, domain_id: int = DEFAULT_DOMAIN_ID, valid_days: int = DEFAULT_VALID_DAYS,
                    heartbeat_topic: str = "", enclaves: Sequence[str] = ENCLAVES,
                    now: datetime.datetime | None = None) -> dict[str, Path]:
    """Write a keystore for ``enclaves`` into ``directory`` (new or empty).

    Args:
        directory: where to write; an existing non-empty directory is refused, never overwritten.
        domain_id: the ROS domain the governance and permissions apply to.
        valid_days: lifetime of the certificates and permissions.
        heartbeat_topic: the controller's ``heartbeat_topic`` (operator publishes, controller reads).
        enclaves: a subset of :data:`ENCLAVES`.
        now: start of validity (UTC; default: the current time).

    Returns:
        enclave -> its directory.
    """
    directory = Path(directory)
    if not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise KeystoreError(f"domain id {domain_id} is outside 0..{MAX_DOMAIN_ID}")
    if valid_days < 1:
        raise KeystoreError(f"valid_days must be at least 1, got {valid_days}")
    if heartbeat_topic:
        validate_topic_name(heartbeat_topic, "heartbeat topic")
    unknown = [enclave for enclave in enclaves if enclave not in ENCLAVES]
    if unknown or not enclaves:
        raise KeystoreError(f"enclaves must be a non-empty subset of {list(ENCLAVES)}, got {list(enclaves)}")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise KeystoreError(f"{directory} exists and is not an empty directory; the keystore is written only "
                            f"into a new or empty one (its CA keys would otherwise be replaced)")
    _require_cryptography()
    # Valid from a day back: a peer whose clock lags must not see the documents as not yet valid.
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - datetime.timedelta(days=1)
    end = start + datetime.timedelta(days=valid_days + 1)
    identity_key, identity_ca = _certificate("OpenHelix identity CA", None, None, start, end, is_ca=True)
    permissions_key, permissions_ca = _certificate("OpenHelix permissions CA", None, None, start, end, is_ca=True)
    public, private, enclaves_root = directory / "public", directory / "private", directory / "enclaves"
    _write(public / "identity_ca.cert.pem", _pem_certificate(identity_ca))
    _write(public / "permissions_ca.cert.pem", _pem_certificate(permissions_ca))
    private.mkdir(mode=0o700)
    _write(private / "identity_ca.key.pem", _pem_key(identity_key), private=True)
    _write(private / "permissions_ca.key.pem", _pem_key(permissions_key), private=True)
    governance = governance_xml(domain_id)
    signed_governance = sign_smime(governance, permissions_ca, permissions_key)
    _write(enclaves_root / "governance.xml", governance)
    _write(enclaves_root / "governance.p7s", signed_governance)
    written = {}
    for enclave in enclaves:
        enclave_directory = enclaves_root / enclave.lstrip("/")
        key, certificate = _certificate(enclave, identity_ca.subject, identity_key, start, end, is_ca=False)
        permissions = permissions_xml(enclave, domain_id, start, end, heartbeat_topic)
        # Each enclave directory is complete on its own (copies, not links): copy it to the
        # machine that runs that node and nothing else needs to travel.
        _write(enclave_directory / "identity_ca.cert.pem", _pem_certificate(identity_ca))
        _write(enclave_directory / "permissions_ca.cert.pem", _pem_certificate(permissions_ca))
        _write(enclave_directory / "governance.p7s", signed_governance)
        _write(enclave_directory / "cert.pem", _pem_certificate(certificate))
        _write(enclave_directory / "key.pem", _pem_key(key), private=True)
        _write(enclave_directory / "permissions.xml", permissions)
        _write(enclave_directory / "permissions.p7s", sign_smime(permissions, permissions_ca, permissions_key))
        written[enclave] = enclave_directory
    return written


__all__ = [
    "CONTROLLER", "ENCLAVES", "KeystoreError", "OPERATOR", "PLANNER", "SIM_BRIDGE", "create_keystore",
    "dds_reply", "dds_request", "dds_topic", "enclave_rules", "governance_xml", "permissions_xml",
    "protected_publications", "sign_smime",
]
