"""A robot's rosbag2 bags -> a CALVIN-layout training split (``openhelix bag-to-dataset``).

**Clock.** Every message with a header is placed at its header stamp (the instant the driver
measured it; ``stamps="receive"`` uses the recorder's receive time instead, for drivers that
leave stamps at zero). Messages without a header (``std_msgs/String`` instructions and
episode markers) are placed at their receive time moved by the offset between stamp and
receive time of the last stamped message recorded before them, so that both clocks agree even
when the two differ (simulated time, or clocks of different machines).

**Ticks.** A training frame is written per tick. Without ``rate_hz`` the ticks are the frames of
the first camera (no resampling of the reference camera); with it, ticks fall every
``1/rate_hz`` s. At each tick (see :mod:`openhelix_core.data.alignment`): each camera's colour
and depth frames are the nearest ones within ``image_tolerance`` s; TCP poses are interpolated
(slerp for rotations), joint states linearly, between samples at most ``max_gap`` s apart; the
gripper command holds its last value. Nothing is extrapolated: a tick a signal does not cover
is not written, and an episode with such a hole is split there (reported).

**State source** (``robot_obs[:6]``, CALVIN's TCP xyz + extrinsic-xyz Euler angles):
``pose`` a measured ``geometry_msgs/PoseStamped`` of the TCP; ``commanded`` the commanded
``PoseStamped`` stream (when the arm's own pose was not recorded); ``joints``
``sensor_msgs/JointState`` through forward kinematics of the arm's URDF (base link -> TCP link);
``twist`` a ``geometry_msgs/TwistStamped`` integrated from a starting pose (in the base frame,
or in the TCP frame as a body twist). Units and frames are checked (REP 103: metres, radians;
REP 105: one fixed base frame), and an ambiguous bag is refused with the topic and the fix.

**Gripper.** ``robot_obs[6]`` is the finger opening width in metres (the sum of the finger
joints, or the commanded openness times ``gripper_max_width``); ``robot_obs[14]`` and the
action's gripper are +1 (open) / -1 (closed), from the gripper command (openness >= 0.5 is
open) when one was recorded, else from the width (open above 90 % of ``gripper_max_width``).
``robot_obs[7:14]`` holds up to seven arm joint positions when joint states were recorded.

**Actions** (absolute, CALVIN's ``actions``): the commanded pose at the tick when a command
topic was recorded (and is not the state source), else the next frame's pose.

**Episodes**: ``split="instruction"`` starts an episode at every message of the instruction
topic (its text is the instruction); ``"topic"`` at every ``std_msgs/String`` of
``split_topic`` (text ``end``/``stop`` ends one without starting another; other non-empty
text is the instruction); ``"pause"`` cuts where the arm holds still for ``pause_s``; ``"none"``
makes each bag one episode. Still stretches of at least ``pause_s`` at the start and end of
an episode are trimmed. An episode without an instruction (no message, no ``instruction``
option) is refused.

**Cameras**: dataset slot ``static`` is a camera fixed to the base, ``gripper`` one on the hand
(CALVIN's two views; name the cameras so in the controller too). Intrinsics come from each
camera's ``CameraInfo`` (one K for the whole bag). Extrinsics come from the controller's
parameter file (``camera_names`` / ``camera_mounts`` / ``camera_extrinsics``) or, without one,
from ``/tf_static`` (or ``/openhelix/static_transforms``) in the bag (base frame -> camera frame
for a fixed camera, TCP frame -> camera frame for a hand camera).

Output: the CALVIN split (frames, ``ep_start_end_ids.npy``, language annotations),
``camera_info.json`` and ``conversion.json`` (sources, measured rates, tolerances, counts of
skipped and corrupt messages, episodes). Memory stays bounded: a first pass reads stamps and the
small messages, a second decodes only the images that are written.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from openhelix_core.data.alignment import (
    hold_last,
    integrate_twists,
    interpolate_linear,
    interpolate_poses,
    nearest_sample,
    still_mask,
    true_runs,
    uniform_ticks,
)
from openhelix_core.data.calvin_format import CalvinEpisodeWriter
from openhelix_core.geometry import matrix_to_quaternion, quaternion_to_euler
from openhelix_core.kinematics import KinematicChain, KinematicsError, TransformTree
from openhelix_core.training.dataset import CameraCalibration
from openhelix_ros import topics
from openhelix_ros.bags.io import (
    COMPRESSED_IMAGE,
    BagError,
    BagMessage,
    BagReader,
    ReadStats,
    compressed_to_image,
    normalize_type,
)
from openhelix_ros.conversions import InvalidMessageError, camera_info_to_intrinsics, image_to_depth, image_to_rgb
from openhelix_ros.observation import camera_mounts_from_parameters

LOGGER = logging.getLogger("openhelix.bag_to_dataset")
CONVERSION_REPORT = "conversion.json"
STATE_SOURCES = ("auto", "pose", "commanded", "joints", "twist")
SPLITS = ("auto", "instruction", "topic", "pause", "none")
SLOTS = ("static", "gripper")
SLOT_MOUNTS = {"static": "base", "gripper": "ee"}
ARM_JOINTS_IN_ROBOT_OBS = 7
#: Positions beyond this (m) from the base are not a tabletop arm's TCP in metres.
MAX_PLAUSIBLE_POSITION_M = 5.0
MAX_PLAUSIBLE_SPEED_M_S = 5.0
MAX_PLAUSIBLE_FINGER_M = 0.3
END_MARKERS = ("end", "stop")
OPEN_WIDTH_FRACTION = 0.9
IMAGE_TYPES = ("sensor_msgs/msg/Image", COMPRESSED_IMAGE)
#: Where static camera and robot transforms are read from: tf2's topic, and the latched topic
#: this project's nodes use where tf2_msgs is not installed.
TRANSFORM_TOPICS = (topics.TF_STATIC, topics.STATIC_TRANSFORMS)


class ConversionError(ValueError):
    """The bag cannot be turned into training data as asked; the text names the topic and the fix."""


@dataclass
class ConversionOptions:
    """What to read and how (see the module doc). Topic names are after ``remap``."""

    cameras: dict = field(default_factory=lambda: {"static": "/cameras/static", "gripper": "/cameras/gripper"})
    state_source: str = "auto"
    ee_pose_topic: str = topics.EE_POSE
    pose_command_topic: str = topics.POSE_COMMAND
    joint_states_topic: str = topics.JOINT_STATES
    twist_topic: str = "/ee_twist"
    gripper_command_topic: str = topics.GRIPPER_COMMAND
    instruction_topic: str = topics.INSTRUCTION
    urdf: Optional[str] = None
    base_link: Optional[str] = None
    tip_link: Optional[str] = None
    initial_pose: Optional[Sequence[float]] = None
    base_frame: Optional[str] = None
    ee_frame: str = "tcp"
    gripper_joints: Sequence[str] = ("panda_finger_joint1", "panda_finger_joint2")
    arm_joints: Optional[Sequence[str]] = None
    gripper_max_width: float = 0.08
    rate_hz: Optional[float] = None
    image_tolerance: float = 0.05
    max_gap: float = 0.1
    split: str = "auto"
    split_topic: str = "/episode"
    pause_s: float = 1.0
    instruction: str = ""
    task: str = ""
    stamps: str = "header"
    controller_config: Optional[str] = None
    min_frames: int = 2
    remap: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cameras = dict(self.cameras)
        unknown = sorted(set(self.cameras) - set(SLOTS))
        if unknown or "static" not in self.cameras:
            raise ValueError(f"cameras map dataset slots {SLOTS} to topic prefixes and need 'static'; got "
                             f"{sorted(self.cameras)}")
        if self.state_source not in STATE_SOURCES:
            raise ValueError(f"state source must be one of {STATE_SOURCES}, got {self.state_source!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.stamps not in ("header", "receive"):
            raise ValueError(f"stamps must be 'header' or 'receive', got {self.stamps!r}")
        for name in ("image_tolerance", "max_gap", "pause_s", "gripper_max_width"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.rate_hz is not None and not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate must be a positive number of Hz, got {self.rate_hz}")
        if self.initial_pose is not None and len(self.initial_pose) != 7:
            raise ValueError("initial pose needs x y z qx qy qz qw")
        if int(self.min_frames) < 2:
            raise ValueError("min_frames must be at least 2 (a trajectory needs two poses)")

    def camera_topics(self, slot: str) -> dict:
        prefix = self.cameras[slot].rstrip("/")
        return {"color": f"{prefix}/color/image_raw", "depth": f"{prefix}/depth/image_raw",
                "info": f"{prefix}/color/camera_info"}


@dataclass
class EpisodeReport:
    bag: str
    start_s: float
    end_s: float
    instruction: str
    frames: int
    pieces: int
    first_frame: int = -1


@dataclass
class ConversionReport:
    bags: list = field(default_factory=list)
    state_source: str = ""
    action_source: str = ""
    gripper_source: str = ""
    split: str = ""
    base_frame: str = ""
    tick_source: str = ""
    options: dict = field(default_factory=dict)
    measured_rates_hz: dict = field(default_factory=dict)
    camera_sources: dict = field(default_factory=dict)
    episodes: list = field(default_factory=list)
    frames: int = 0
    ticks_without_data: int = 0
    #: per signal: frame times it did not cover (outside its samples, across a gap, no image near)
    frame_times_without: dict = field(default_factory=dict)
    largest_gaps_s: dict = field(default_factory=dict)
    pieces_too_short: int = 0
    messages: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        LOGGER.warning(text)


# -- message helpers ------------------------------------------------------------------------------

def _stamp(message) -> float:
    stamp = message.header.stamp
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:64] or "task"


@dataclass
class _Series:
    """Samples of one topic in time order: times (s) and the messages (or values) kept."""

    topic: str
    times: list = field(default_factory=list)
    items: list = field(default_factory=list)

    def add(self, time: float, item) -> bool:
        if self.times and time <= self.times[-1]:
            return False
        self.times.append(time)
        self.items.append(item)
        return True

    def __len__(self) -> int:
        return len(self.times)


def _decode_image(message: BagMessage, kind: str) -> np.ndarray:
    msg = message.message
    if normalize_type(message.msgtype) == COMPRESSED_IMAGE:
        msg = compressed_to_image(msg, depth_hint=kind == "depth")
    return image_to_rgb(msg) if kind == "color" else image_to_depth(msg)


class _BagContents:
    """Pass one over a bag: stamps of the images, every small message, checks."""

    def __init__(self, reader: BagReader, options: ConversionOptions, report: ConversionReport):
        self.reader, self.options, self.report = reader, options, report
        self.images: dict[tuple, _Series] = {}
        self.infos: dict[str, _Series] = {}
        self.image_sizes: dict[str, tuple] = {}   # slot -> (H, W) of its first valid colour image
        self.series: dict[str, _Series] = {}
        self.strings: dict[str, list] = defaultdict(list)   # topic -> [(receive s, text)]
        self.static_transforms: list = []
        self.transform_topics: set = set()
        self.clock_offsets: list = []   # (receive s, stamp - receive)
        self.duplicates: defaultdict = defaultdict(int)

    def read(self) -> None:
        options = self.options
        present = self.reader.topics()
        image_topics = {}
        for slot in options.cameras:
            names = options.camera_topics(slot)
            for kind in ("color", "depth"):
                topic = names[kind]
                if topic not in present:
                    compressed = f"{topic}/compressedDepth" if kind == "depth" else f"{topic}/compressed"
                    topic = compressed if compressed in present else topic
                image_topics[topic] = (slot, kind)
                self.images[(slot, kind)] = _Series(topic)
            self.infos[slot] = _Series(names["info"])
        missing = [t for t in list(image_topics) + [s.topic for s in self.infos.values()] if t not in present]
        if missing:
            raise ConversionError(f"bag {self.reader.path}: camera topic(s) {missing} not found; the bag has "
                                  f"{self.reader.describe_topics()}. Map the dataset's cameras with --camera "
                                  f"static=PREFIX (PREFIX/color/image_raw, PREFIX/depth/image_raw, "
                                  f"PREFIX/color/camera_info), or --remap recorded:=expected")
        for topic, (slot, kind) in image_topics.items():
            if normalize_type(present[topic].msgtype) not in IMAGE_TYPES:
                raise ConversionError(f"{topic} has type {present[topic].msgtype}; the {slot} camera's {kind} "
                                      f"images must be sensor_msgs/Image or CompressedImage")
        small = [options.ee_pose_topic, options.pose_command_topic, options.joint_states_topic, options.twist_topic,
                 options.gripper_command_topic, options.instruction_topic, options.split_topic, *TRANSFORM_TOPICS]
        info_series = {series.topic: series for series in self.infos.values()}
        wanted = [t for t in small if t in present] + list(image_topics) + list(info_series)

        def check_image(message: BagMessage) -> Optional[str]:
            """Decodes every image (the frames written are decoded again in the second pass)."""
            if message.topic not in image_topics:
                return None
            slot, kind = image_topics[message.topic]
            try:
                pixels = _decode_image(message, kind)
            except (InvalidMessageError, ValueError) as error:
                return str(error)
            if kind == "color":
                self.image_sizes.setdefault(slot, pixels.shape[:2])
            return None

        for message in self.reader.messages(wanted, validate=check_image):
            receive = message.timestamp_ns * 1e-9
            topic = message.topic
            if topic in (options.instruction_topic, options.split_topic) and hasattr(message.message, "data") \
                    and not hasattr(message.message, "header"):
                self.strings[topic].append((receive, str(message.message.data)))
                continue
            if topic in TRANSFORM_TOPICS:
                # a TFMessage holds a list; the fallback topic one TransformStamped per message
                self.static_transforms.extend(getattr(message.message, "transforms", [message.message]))
                self.transform_topics.add(topic)
                continue
            if not hasattr(message.message, "header"):
                # a command without a header (std_msgs/Float64): receive time on the stamp clock
                offset = self.clock_offsets[-1][1] if self.clock_offsets else 0.0
                series = self.series.setdefault(topic, _Series(topic))
                time_on_stamps = receive + offset
                if series.times and time_on_stamps <= series.times[-1]:
                    # received within one tick of the recorder's clock: the newer command supersedes
                    series.items[-1] = message.message
                    continue
                series.add(time_on_stamps, message.message)
                continue
            stamp = _stamp(message.message)
            if options.stamps == "receive":
                stamp = receive
            elif stamp == 0.0:
                raise ConversionError(f"{topic}: header stamps are zero (the driver does not stamp its messages); "
                                      f"convert with --stamps receive to use the recorder's receive times")
            self.clock_offsets.append((receive, stamp - receive))
            if topic in image_topics:
                series = self.images[image_topics[topic]]
                item = None
            elif topic in info_series:
                series = info_series[topic]
                item = message.message
            else:
                series = self.series.setdefault(topic, _Series(topic))
                item = message.message
            if not series.add(stamp, item):
                self.duplicates[topic] += 1
        for topic, count in self.duplicates.items():
            self.report.warn(f"{topic}: {count} message(s) with a stamp not after the previous one were skipped")

    def to_stamp_clock(self, receive: float) -> float:
        """A receive time (s) on the stamp clock (see the module doc)."""
        if not self.clock_offsets:
            return receive
        receives = np.array([r for r, _ in self.clock_offsets])
        index = max(int(np.searchsorted(receives, receive, side="right")) - 1, 0)
        return receive + self.clock_offsets[index][1]


# -- signals --------------------------------------------------------------------------------------

def _pose_arrays(messages, topic: str, base_frame: Optional[str], explicit_frame: bool, what: str):
    frames = {str(m.header.frame_id) for m in messages}
    if len(frames) > 1:
        raise ConversionError(f"{topic}: poses in several frames {sorted(frames)}; a {what} must be in one fixed "
                              f"base frame (REP 105) -- record it in one frame")
    frame = frames.pop()
    if frame == "":
        if not explicit_frame:
            raise ConversionError(f"{topic}: poses have no frame_id; pass --base-frame FRAME to state the frame "
                                  f"they are in")
        frame = base_frame
    elif base_frame is not None and frame != base_frame:
        raise ConversionError(f"{topic}: poses are in frame '{frame}', the base frame is '{base_frame}'; record "
                              f"the {what} in the base frame or pass --base-frame {frame}")
    positions = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in messages])
    quaternions = np.array([[m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w]
                            for m in messages])
    _check_poses(topic, positions, quaternions)
    return frame, positions, quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True)


def _check_poses(topic: str, positions: np.ndarray, quaternions: np.ndarray) -> None:
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(quaternions))):
        raise ConversionError(f"{topic}: poses contain NaN or inf")
    norms = np.linalg.norm(quaternions, axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-3):
        raise ConversionError(f"{topic}: orientation quaternions are not unit length (norms "
                              f"{norms.min():.4g}..{norms.max():.4g})")
    farthest = float(np.abs(positions).max(initial=0.0))
    if farthest > MAX_PLAUSIBLE_POSITION_M:
        raise ConversionError(f"{topic}: positions reach {farthest:g}; ROS positions are metres (REP 103) and a "
                              f"TCP is not {farthest:g} m from the base -- millimetres? Fix the publisher")


def _euler(quaternions: np.ndarray) -> np.ndarray:
    return np.asarray(quaternion_to_euler(np.asarray(quaternions, dtype=np.float64), "xyz"))


def _joint_matrix(messages, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(N, len(names))`` positions and a per-message mask of messages that hold all ``names``."""
    values = np.full((len(messages), len(names)), np.nan)
    for row, message in enumerate(messages):
        positions = dict(zip(list(message.name), list(message.position)))
        for col, name in enumerate(names):
            if name in positions:
                values[row, col] = positions[name]
    present = np.all(np.isfinite(values), axis=1)
    return values, present


class _Signals:
    """State, gripper and command signals of one bag, evaluated at tick times."""

    def __init__(self, contents: _BagContents, options: ConversionOptions, report: ConversionReport):
        self.contents, self.options, self.report = contents, options, report
        self.series = contents.series
        self.base_frame = options.base_frame
        self.missing: dict[str, np.ndarray] = {}   # topic -> frame times it did not cover
        self._choose_state_source()
        self._gripper()

    def _have(self, topic: str) -> bool:
        return topic in self.series and len(self.series[topic]) > 0

    def _choose_state_source(self) -> None:
        options = self.options
        source = options.state_source
        if source == "auto":
            if self._have(options.ee_pose_topic):
                source = "pose"
            elif options.urdf and self._have(options.joint_states_topic):
                source = "joints"
            elif self._have(options.pose_command_topic):
                source = "commanded"
            else:
                raise ConversionError(
                    f"no TCP pose in the bag: record {options.ee_pose_topic} (geometry_msgs/PoseStamped), or give "
                    f"--urdf with {options.joint_states_topic}, or --state-source twist with --twist-topic; the bag "
                    f"has {self.contents.reader.describe_topics()}")
        self.state_source = source
        explicit = options.base_frame is not None
        if source in ("pose", "commanded"):
            topic = options.ee_pose_topic if source == "pose" else options.pose_command_topic
            self._require(topic, "the TCP pose")
            series = self.series[topic]
            self.base_frame, positions, quaternions = _pose_arrays(series.items, topic, options.base_frame, explicit,
                                                                   "TCP pose")
            self.state = (np.array(series.times), positions, quaternions)
            self.state_topic = topic
        elif source == "joints":
            self.state = self._forward_kinematics()
            self.state_topic = options.joint_states_topic
        else:
            self.state = self._integrated_twists()
            self.state_topic = options.twist_topic
        self.report.state_source = f"{source} ({self.state_topic})"
        self.report.base_frame = self.base_frame or ""

    def _require(self, topic: str, what: str) -> None:
        if not self._have(topic):
            raise ConversionError(f"{what} topic {topic} is not in the bag (or has no valid message); the bag has "
                                  f"{self.contents.reader.describe_topics()}")

    def _forward_kinematics(self):
        options = self.options
        if not (options.urdf and options.base_link and options.tip_link):
            raise ConversionError("--state-source joints needs --urdf, --base-link and --tip-link (the TCP link)")
        self._require(options.joint_states_topic, "the joint states")
        chain = KinematicChain.from_urdf(options.urdf, options.base_link, options.tip_link)
        series = self.series[options.joint_states_topic]
        values, present = _joint_matrix(series.items, chain.joint_names)
        if not present.any():
            names = sorted({n for m in series.items for n in m.name})
            raise ConversionError(f"{options.joint_states_topic}: no message holds the chain's joints "
                                  f"{list(chain.joint_names)} ({options.base_link} -> {options.tip_link}); it names "
                                  f"{names}")
        if np.abs(values[present]).max() > 4 * math.pi:
            raise ConversionError(f"{options.joint_states_topic}: joint positions reach "
                                  f"{np.abs(values[present]).max():g}; ROS joint angles are radians (REP 103) -- "
                                  f"degrees? Fix the publisher")
        poses = chain.forward(values[present])
        quaternions = np.asarray(matrix_to_quaternion(poses[:, :3, :3]))
        if self.base_frame is not None and self.base_frame != options.base_link:
            raise ConversionError(f"forward kinematics gives poses in {options.base_link}, the base frame is "
                                  f"'{self.base_frame}'; pass --base-link {self.base_frame} or --base-frame "
                                  f"{options.base_link}")
        self.base_frame = options.base_link
        return np.array(series.times)[present], poses[:, :3, 3], quaternions

    def _integrated_twists(self):
        options = self.options
        self._require(options.twist_topic, "the twist")
        series = self.series[options.twist_topic]
        frames = {str(m.header.frame_id) for m in series.items}
        if len(frames) != 1:
            raise ConversionError(f"{options.twist_topic}: twists in frames {sorted(frames)}; they must all be in "
                                  f"the base frame or all in the TCP frame")
        frame = frames.pop()
        if options.initial_pose is not None:
            start_position, start_quaternion = np.array(options.initial_pose[:3]), np.array(options.initial_pose[3:])
        elif self._have(options.ee_pose_topic):
            first = self.series[options.ee_pose_topic].items[0]
            _, p, q = _pose_arrays([first], options.ee_pose_topic, options.base_frame, options.base_frame is not None,
                                   "TCP pose")
            start_position, start_quaternion = p[0], q[0]
        else:
            raise ConversionError(f"{options.twist_topic}: integrating twists needs a starting pose: pass "
                                  f"--initial-pose x y z qx qy qz qw or record {options.ee_pose_topic}")
        if self.base_frame is None:
            raise ConversionError("--state-source twist needs --base-frame (the frame the poses are expressed in)")
        if frame not in (self.base_frame, options.ee_frame):
            raise ConversionError(f"{options.twist_topic}: twists are in frame '{frame}', neither the base frame "
                                  f"'{self.base_frame}' nor the TCP frame '{options.ee_frame}' (--ee-frame)")
        linear = np.array([[m.twist.linear.x, m.twist.linear.y, m.twist.linear.z] for m in series.items])
        angular = np.array([[m.twist.angular.x, m.twist.angular.y, m.twist.angular.z] for m in series.items])
        if not (np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))):
            raise ConversionError(f"{options.twist_topic}: twists contain NaN or inf")
        fastest = float(np.linalg.norm(linear, axis=1).max())
        if fastest > MAX_PLAUSIBLE_SPEED_M_S:
            raise ConversionError(f"{options.twist_topic}: linear velocities reach {fastest:g}; ROS velocities are "
                                  f"m/s (REP 103) -- mm/s? Fix the publisher")
        times = np.array(series.times)
        try:
            positions, quaternions = integrate_twists(times, linear, angular, start_position, start_quaternion,
                                                      body_frame=frame == options.ee_frame, max_gap=options.max_gap)
        except ValueError as error:
            raise ConversionError(f"{options.twist_topic}: {error}") from error
        self.report.warn(f"poses integrated from {options.twist_topic} ({'TCP' if frame == options.ee_frame else 'base'}"
                         f" frame): integration drifts; prefer a measured pose topic when there is one")
        return times, positions, quaternions

    def _gripper(self) -> None:
        options = self.options
        self.command = None
        if self._have(options.gripper_command_topic):
            series = self.series[options.gripper_command_topic]
            values = np.array([float(getattr(m, "data", np.nan)) for m in series.items])
            if not np.all(np.isfinite(values)) or values.min() < -1.0 - 1e-9 or values.max() > 1.0 + 1e-9:
                raise ConversionError(f"{options.gripper_command_topic}: gripper commands must be openness in [0, 1] "
                                      f"(or +-1); got {values.min():g}..{values.max():g}")
            self.command = (np.array(series.times), values)
        self.width = None
        self.arm = None
        if self._have(options.joint_states_topic):
            series = self.series[options.joint_states_topic]
            values, present = _joint_matrix(series.items, list(options.gripper_joints))
            if present.any():
                widths = values[present].sum(axis=1)
                if np.abs(values[present]).max() > MAX_PLAUSIBLE_FINGER_M:
                    raise ConversionError(f"{options.joint_states_topic}: finger joints {list(options.gripper_joints)}"
                                          f" reach {np.abs(values[present]).max():g}; prismatic joint positions are "
                                          f"metres (REP 103) -- millimetres? Or name the finger joints with "
                                          f"--gripper-joints")
                self.width = (np.array(series.times)[present], widths)
            self.arm = self._arm_joints(series)
        if self.width is None and self.command is None:
            raise ConversionError(f"no gripper signal: record the finger joints {list(options.gripper_joints)} in "
                                  f"{options.joint_states_topic} (or name them with --gripper-joints) or the gripper "
                                  f"command {options.gripper_command_topic} (std_msgs/Float64 openness)")
        width = "finger joints" if self.width is not None else "commanded openness x max width"
        state = f"command {options.gripper_command_topic}" if self.command is not None else "width"
        self.report.gripper_source = f"width from {width}; open/closed from {state}"

    def _arm_joints(self, series: _Series):
        names = self.options.arm_joints
        if names is None:
            names = []
            for name in series.items[0].name:
                if name not in self.options.gripper_joints and name not in names:
                    names.append(str(name))
        names = list(names)[:ARM_JOINTS_IN_ROBOT_OBS]
        if not names:
            return None
        values, present = _joint_matrix(series.items, names)
        if not present.any():
            return None
        return np.array(series.times)[present], values[present]

    def evaluate(self, ticks: np.ndarray) -> dict:
        """robot_obs ``(T, 15)``, absolute actions ``(T, 7)``, valid ``(T,)`` at ``ticks``."""
        options = self.options
        times, positions, quaternions = self.state
        position, quaternion, valid = interpolate_poses(times, positions, quaternions, ticks, options.max_gap)
        self.uncovered(self.state_topic, valid)
        if self.width is not None:
            width, width_valid = interpolate_linear(*self.width, ticks, options.max_gap)
            width = width[:, 0]
            valid &= width_valid
            self.uncovered(options.joint_states_topic, width_valid)
        command = None
        if self.command is not None:
            held, command_valid = hold_last(*self.command, ticks)
            command = held[:, 0]
            if self.width is None:
                width = np.clip(command, 0.0, 1.0) * options.gripper_max_width
                valid &= command_valid
                self.uncovered(options.gripper_command_topic, command_valid)
            else:
                # before the first command the fingers say whether the gripper is open
                command = np.where(command_valid, command, np.nan)
        gripper = np.where(width >= OPEN_WIDTH_FRACTION * options.gripper_max_width, 1.0, -1.0)
        if command is not None:
            gripper = np.where(np.isnan(command), gripper, np.where(command >= 0.5, 1.0, -1.0))
        arm = np.zeros((len(ticks), ARM_JOINTS_IN_ROBOT_OBS))
        if self.arm is not None:
            values, arm_valid = interpolate_linear(*self.arm, ticks, options.max_gap)
            arm[:, :values.shape[1]] = values
            valid &= arm_valid
            self.uncovered(options.joint_states_topic, arm_valid)
        robot_obs = np.concatenate([position, _euler(quaternion), width[:, None], arm, gripper[:, None]], axis=1)
        actions, next_pose = self._actions(ticks, robot_obs)
        valid &= np.all(np.isfinite(actions), axis=1)
        return {"robot_obs": robot_obs, "actions": actions, "valid": valid, "quaternions": quaternion,
                "action_is_next_pose": next_pose}

    def uncovered(self, topic: str, valid: np.ndarray) -> None:
        """Notes the frame times ``topic`` did not cover (one topic may feed several signals)."""
        self.missing[topic] = self.missing.get(topic, np.zeros(len(valid), dtype=bool)) | ~valid

    def _actions(self, ticks: np.ndarray, robot_obs: np.ndarray) -> tuple[np.ndarray, bool]:
        """Absolute actions ``(T, 7)``, and whether they are the frames' own poses (each frame then
        takes the next frame's)."""
        options = self.options
        topic = options.pose_command_topic
        if self.state_source != "commanded" and self._have(topic):
            series = self.series[topic]
            _, positions, quaternions = _pose_arrays(series.items, topic, self.base_frame, True, "commanded pose")
            pose, valid = hold_last(np.array(series.times), np.concatenate([positions, quaternions], axis=1), ticks,
                                    max_age=options.max_gap)
            self.report.action_source = f"commanded pose {topic}"
            actions = np.concatenate([pose[:, :3], _euler(pose[:, 3:]), robot_obs[:, 14:15]], axis=1)
            actions[~valid] = np.nan
            self.uncovered(topic, valid)
            return actions, False
        self.report.action_source = "the next frame's pose (no command topic recorded)"
        return np.concatenate([robot_obs[:, :6], robot_obs[:, 14:15]], axis=1), True


# -- episodes -------------------------------------------------------------------------------------

def _episodes(contents: _BagContents, options: ConversionOptions, ticks: np.ndarray, state: dict,
              report: ConversionReport) -> list[tuple[int, int, str]]:
    """``(first tick, last tick, instruction)`` per episode."""
    split = options.split
    instructions = [(contents.to_stamp_clock(r), text) for r, text in contents.strings.get(options.instruction_topic, [])]
    if split == "auto":
        split = "instruction" if instructions else "none"
    report.split = split
    if split in ("instruction", "topic"):
        topic = options.instruction_topic if split == "instruction" else options.split_topic
        markers = [(contents.to_stamp_clock(r), text) for r, text in contents.strings.get(topic, [])]
        if not markers:
            raise ConversionError(f"split by {topic}: the bag has no std_msgs/String message on it; the bag has "
                                  f"{contents.reader.describe_topics()}")
        bounds = []
        for k, (time, text) in enumerate(markers):
            if split == "topic" and text.strip().lower() in END_MARKERS:
                continue
            end = markers[k + 1][0] if k + 1 < len(markers) else math.inf
            first = int(np.searchsorted(ticks, time, side="left"))
            last = int(np.searchsorted(ticks, end, side="left")) - 1
            instruction = text.strip() if split == "instruction" or text.strip().lower() not in ("", "start") else ""
            bounds.append((first, last, instruction or _instruction_before(instructions, time) or options.instruction))
    elif split == "pause":
        moving = ~still_mask(state["robot_obs"][:, :3], state["quaternions"], state["robot_obs"][:, 6],
                             ticks, options.pause_s)
        bounds = [(a, b, _instruction_before(instructions, ticks[a]) or options.instruction)
                  for a, b in true_runs(moving)]
    else:
        bounds = [(0, len(ticks) - 1, _instruction_before(instructions, ticks[-1]) or options.instruction)]
    episodes = []
    for first, last, instruction in bounds:
        if last < first:
            continue
        first, last = _trim_still(ticks, state, first, last, options.pause_s)
        if not instruction:
            raise ConversionError(f"the episode at {ticks[first]:.2f} s has no instruction: record "
                                  f"{options.instruction_topic} (std_msgs/String) or pass --instruction TEXT")
        episodes.append((first, last, instruction))
    return episodes


def _instruction_before(instructions: list, time: float) -> str:
    before = [text for t, text in instructions if t <= time]
    return before[-1].strip() if before else ""


def _trim_still(ticks: np.ndarray, state: dict, first: int, last: int, pause_s: float) -> tuple[int, int]:
    span = slice(first, last + 1)
    still = still_mask(state["robot_obs"][span, :3], state["quaternions"][span], state["robot_obs"][span, 6],
                       ticks[span], pause_s)
    moving = np.flatnonzero(~still)
    if moving.size == 0:
        return first, last
    return first + int(moving[0]), first + int(moving[-1])


# -- cameras --------------------------------------------------------------------------------------

def _controller_cameras(path: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConversionError(f"cannot read controller parameters {path}: {error}") from error

    def find(node):
        if isinstance(node, dict):
            params = node.get("ros__parameters")
            if isinstance(params, dict) and "camera_names" in params:
                return params
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        return None

    params = find(data)
    if params is None:
        raise ConversionError(f"{path} has no ros__parameters with camera_names (the controller's parameter file)")
    try:
        mounts = camera_mounts_from_parameters(params["camera_names"], params.get("camera_mounts", ["base", "ee"]),
                                               params.get("camera_extrinsics", [0.0] * 7 * len(params["camera_names"])))
    except ValueError as error:
        raise ConversionError(f"{path}: {error}") from error
    return {m.name: m for m in mounts}


def _calibration(contents: _BagContents, options: ConversionOptions, base_frame: str, report: ConversionReport,
                 image_sizes: dict) -> CameraCalibration:
    controller = _controller_cameras(options.controller_config) if options.controller_config else None
    tree = None
    poses, intrinsics = {}, {}
    for slot in options.cameras:
        series = contents.infos[slot]
        if not len(series):
            raise ConversionError(f"{series.topic}: no valid CameraInfo; the {slot} camera's intrinsics are unknown")
        height, width = image_sizes[slot]
        try:
            matrices = [camera_info_to_intrinsics(m, width, height) for m in series.items]
        except InvalidMessageError as error:
            raise ConversionError(f"{series.topic}: {error}") from error
        if any(not np.allclose(k, matrices[0], rtol=1e-6, atol=1e-9) for k in matrices):
            raise ConversionError(f"{series.topic}: the intrinsics change during the bag; convert each setting "
                                  f"separately")
        intrinsics[slot] = matrices[0]
        mount = SLOT_MOUNTS[slot]
        if controller is not None:
            if slot not in controller:
                raise ConversionError(f"{options.controller_config}: camera_names {sorted(controller)} lack '{slot}' "
                                      f"(the dataset's cameras are 'static' on the base and 'gripper' on the hand)")
            if controller[slot].mount != mount:
                raise ConversionError(f"{options.controller_config}: camera '{slot}' is mounted on "
                                      f"'{controller[slot].mount}'; the dataset's '{slot}' camera is on '{mount}'")
            poses[slot] = controller[slot].optical_to_mount
            report.camera_sources[slot] = f"{options.controller_config} ({mount})"
            continue
        camera_frame = str(series.items[0].header.frame_id)
        if tree is None:
            tree = _static_tree(contents)
        parent = base_frame if mount == "base" else options.ee_frame
        try:
            poses[slot] = tree.lookup(parent, camera_frame)
        except (KeyError, ValueError) as error:
            raise ConversionError(
                f"the {slot} camera's pose is unknown: /tf_static does not connect '{parent}' to its frame "
                f"'{camera_frame}' ({error}); pass --controller-config with camera_names/camera_mounts/"
                f"camera_extrinsics, or record /tf_static") from error
        report.camera_sources[slot] = f"{' + '.join(sorted(contents.transform_topics))} {parent} -> {camera_frame}"
    def vertical_fov(slot: str) -> float:
        # kept beside K for readers that take the field of view; K is what the dataset uses
        if slot not in intrinsics:
            return CameraCalibration.calvin().gripper_fov
        return math.degrees(2.0 * math.atan(image_sizes[slot][0] / (2.0 * intrinsics[slot][1, 1])))

    return CameraCalibration(vertical_fov("static"), poses["static"], vertical_fov("gripper"),
                             poses.get("gripper", np.eye(4)), source="bag-to-dataset",
                             static_intrinsics=intrinsics["static"], gripper_intrinsics=intrinsics.get("gripper"))


def _static_tree(contents: _BagContents):
    tree = TransformTree()
    for transform in contents.static_transforms:
        try:
            tree.add_transform_message(transform)
        except KinematicsError as error:
            raise ConversionError(f"/tf_static: {error}") from error
    return tree


# -- conversion -----------------------------------------------------------------------------------

def _ticks(contents: _BagContents, options: ConversionOptions, report: ConversionReport) -> np.ndarray:
    reference = contents.images[("static", "color")]
    if not len(reference):
        raise ConversionError(f"{reference.topic}: no valid image")
    if options.rate_hz is None:
        report.tick_source = f"frames of {reference.topic}"
        return np.array(reference.times)
    start = max(series.times[0] for series in contents.images.values())
    end = min(series.times[-1] for series in contents.images.values())
    report.tick_source = f"every {1.0 / options.rate_hz:.4f} s"
    return uniform_ticks(start, end, options.rate_hz)


def _rate(times: list) -> float:
    """Messages per second over the topic's whole span (jittered drivers average out)."""
    return float((len(times) - 1) / (times[-1] - times[0])) if len(times) > 2 else float("nan")


def convert_bag(path, writer: CalvinEpisodeWriter, options: ConversionOptions, report: ConversionReport
                ) -> CameraCalibration:
    """Appends the episodes of one bag to ``writer``; returns the bag's camera calibration."""
    with BagReader(path, remap=options.remap) as reader:
        contents = _BagContents(reader, options, report)
        contents.read()
        # the later passes read the same messages again; the first pass's counts are the bag's
        report.messages[str(path)] = reader.stats.to_dict()
        reader.stats = ReadStats()
        for (slot, kind), series in contents.images.items():
            if not len(series):
                raise ConversionError(f"{series.topic}: no valid image in bag {path} (see the warnings)")
            report.measured_rates_hz[series.topic] = _rate(series.times)
        for topic, series in contents.series.items():
            report.measured_rates_hz[topic] = _rate(series.times)
        signals = _Signals(contents, options, report)
        ticks = _ticks(contents, options, report)
        state = signals.evaluate(ticks)
        picks = {}
        for key, series in contents.images.items():
            index, ok = nearest_sample(series.times, ticks, options.image_tolerance)
            picks[key] = index
            state["valid"] &= ok
            signals.uncovered(series.topic, ok)
        for topic, missing in signals.missing.items():
            report.frame_times_without[topic] = report.frame_times_without.get(topic, 0) + int(missing.sum())
        every_series = {**{series.topic: series for series in contents.images.values()}, **contents.series}
        for topic in report.frame_times_without:
            series = every_series.get(topic)
            if series is not None and len(series) > 1:
                report.largest_gaps_s[topic] = max(report.largest_gaps_s.get(topic, 0.0),
                                                   float(np.diff(series.times).max()))
        calibration = _calibration(contents, options, signals.base_frame, report, contents.image_sizes)
        episodes = _episodes(contents, options, ticks, state, report)
        plan = _plan(ticks, state, episodes, report, str(path), options)
        _write(reader, contents, options, writer, plan, picks, state, report)
        report.bags.append(str(path))
        return calibration


@dataclass
class _Piece:
    ticks: list
    report: EpisodeReport


def _plan(ticks, state, episodes, report: ConversionReport, bag: str, options: ConversionOptions) -> list:
    pieces = []
    for first, last, instruction in episodes:
        valid = state["valid"][first:last + 1]
        runs = [(first + a, first + b) for a, b in true_runs(valid)]
        report.ticks_without_data += int((~valid).sum())
        kept = [(a, b) for a, b in runs if b - a + 1 >= options.min_frames]
        report.pieces_too_short += len(runs) - len(kept)
        if len(kept) > 1:
            report.warn(f"{bag}: the episode '{instruction}' at {ticks[first]:.2f} s has gaps in its data (more than "
                        f"--max-gap / --image-tolerance); written as {len(kept)} separate episodes")
        for a, b in kept:
            episode = EpisodeReport(bag, float(ticks[a]), float(ticks[b]), instruction, b - a + 1, len(kept))
            pieces.append(_Piece(list(range(a, b + 1)), episode))
    return pieces


def _write(reader: BagReader, contents: _BagContents, options: ConversionOptions, writer: CalvinEpisodeWriter,
           pieces: list, picks: dict, state: dict, report: ConversionReport) -> None:
    """Pass two: decode only the images of written frames, write frames in tick order."""
    needed: dict[tuple, dict] = defaultdict(dict)   # (slot, kind) -> {image index: last tick using it}
    for piece in pieces:
        for tick in piece.ticks:
            for key, index in picks.items():
                needed[key][int(index[tick])] = tick
    topic_keys = {contents.images[key].topic: key for key in contents.images}
    time_index = {key: {t: i for i, t in enumerate(series.times)} for key, series in contents.images.items()}
    decoded: dict[tuple, dict] = defaultdict(dict)
    queue = [(piece_index, tick) for piece_index, piece in enumerate(pieces) for tick in piece.ticks]
    cursor = 0
    stamp_of = (lambda m: m.timestamp_ns * 1e-9) if options.stamps == "receive" else (lambda m: _stamp(m.message))

    def flush() -> None:
        nonlocal cursor
        while cursor < len(queue):
            piece_index, tick = queue[cursor]
            frames = {}
            for key, index in picks.items():
                image = decoded[key].get(int(index[tick]))
                if image is None:
                    return
                frames[key] = image
            piece = pieces[piece_index]
            if tick == piece.ticks[0]:
                piece.report.first_frame = writer.start_episode()
            observation = {"robot_obs": state["robot_obs"][tick]}
            for (slot, kind), image in frames.items():
                observation[f"{'rgb' if kind == 'color' else 'depth'}_{slot}"] = image
            following = state["action_is_next_pose"] and tick + 1 <= piece.ticks[-1]
            action = state["actions"][tick + 1] if following else state["actions"][tick]
            writer.add_frame(observation, action)
            if tick == piece.ticks[-1]:
                writer.end_episode()
                instruction = piece.report.instruction
                writer.annotate(piece.report.first_frame, writer.last_index, options.task or _slug(instruction),
                                instruction)
                report.episodes.append(asdict(piece.report))
            report.frames += 1
            for key, index in picks.items():
                if needed[key].get(int(index[tick])) == tick:
                    decoded[key].pop(int(index[tick]), None)
            cursor += 1

    for message in reader.messages(list(topic_keys)):
        key = topic_keys[message.topic]
        index = time_index[key].get(stamp_of(message))
        if index is None or index not in needed[key] or index in decoded[key]:
            continue
        try:
            decoded[key][index] = _decode_image(message, key[1])
        except (InvalidMessageError, ValueError):
            continue  # counted in the first pass; a valid frame with this stamp follows
        flush()
    flush()
    if cursor < len(queue):
        raise BagError(f"{reader.path}: images read in the first pass are missing in the second; the bag changed "
                       f"while it was converted")


def convert_bags(bags: Sequence, out_dir, options: ConversionOptions) -> ConversionReport:
    """Converts ``bags`` into one CALVIN split at ``out_dir`` (absent or empty). The split is written
    beside it and moved into place only when every bag converted: a refused bag leaves nothing."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConversionError(f"{out_dir} already exists and is not empty; convert into a new directory")
    report = ConversionReport(options=asdict(options))
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        writer = CalvinEpisodeWriter(partial)
        calibration = None
        for bag in bags:
            bag_calibration = convert_bag(bag, writer, options, report)
            if calibration is None:
                calibration = bag_calibration
            elif not _same_calibration(calibration, bag_calibration):
                raise ConversionError(f"bag {bag}: its cameras' intrinsics or poses differ from those of {bags[0]}; "
                                      f"convert bags of different camera setups into different datasets")
        if not report.frames:
            raise ConversionError(_nothing_written(report, options))
        writer.close()
        calibration.save(partial)
        (partial / CONVERSION_REPORT).write_text(json.dumps(asdict(report), indent=2, default=_json_default) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _nothing_written(report: ConversionReport, options: ConversionOptions) -> str:
    uncovered = ", ".join(f"{topic} {count} (largest gap {report.largest_gaps_s.get(topic, float('nan')):.3f} s)"
                          for topic, count in sorted(report.frame_times_without.items(), key=lambda i: -i[1]) if count)
    return (f"no frame could be written: at every frame time some signal was missing. Frame times each signal did "
            f"not cover: {uncovered}. Signals sampled further apart than --max-gap {options.max_gap} s (images: "
            f"--image-tolerance {options.image_tolerance} s) are not interpolated across; raise the limit if that "
            f"spacing is the topic's rate")


def _same_calibration(a: CameraCalibration, b: CameraCalibration) -> bool:
    pairs = [(a.static_to_base, b.static_to_base), (a.gripper_to_tcp, b.gripper_to_tcp),
             (a.static_intrinsics, b.static_intrinsics)]
    if (a.gripper_intrinsics is None) != (b.gripper_intrinsics is None):
        return False
    if a.gripper_intrinsics is not None:
        pairs.append((a.gripper_intrinsics, b.gripper_intrinsics))
    return all(np.allclose(x, y, atol=1e-6) for x, y in pairs)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    return str(value)


__all__ = ["CONVERSION_REPORT", "ConversionError", "ConversionOptions", "ConversionReport", "convert_bag",
           "convert_bags"]
