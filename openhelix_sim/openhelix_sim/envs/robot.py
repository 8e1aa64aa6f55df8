"""Franka Panda arm for the play table, controlled like CALVIN's robot.

Values taken from mees/calvin_env (read, not copied):

* ``conf/robot/panda.yaml``: arm joints 0-6, finger joints 9 and 10 with limits [0, 0.04],
  ``tcp_link_id: 13``, ``gripper_cam_link: 12``, ``max_joint_force: 200``,
  ``gripper_force: 200``, ``max_velocity: 2``.
* ``conf/scene/calvin_scene_D.yaml``: base position (-0.34, -0.46, 0.24), base orientation
  (0, 0, 0), initial arm joints.
* ``calvin_env/robot/robot.py``: relative actions are scaled by ``max_rel_pos = 0.02`` m and
  ``max_rel_orn = 0.05`` rad and added to a running target pose (Euler xyz); IK targets the TCP
  link with null-space limits of +-7 rad and the initial joints (+ open fingers) as rest pose;
  gripper action +1 opens (target 0.04, force 200/100) and -1 closes (target 0, force 200);
  the two fingers are tied by a gear constraint (ratio -1); a white cylinder (radius 0.13)
  stands under the base, shifted 0.05 m backwards; robot_obs layout.
* ``data/franka_panda/panda.urdf``: CALVIN's Panda is pybullet_data's Panda plus two fixed
  links on ``panda_hand``: ``gripper_cam`` at xyz (-0.1, 0, 0), rpy (1.3, 0, -1.57), and ``tcp``.
  We append the same two frames (our own XML) to pybullet_data's Panda so the link indices
  (12, 13) match CALVIN.
* TCP offset: ``panda.urdf`` puts ``tcp`` at xyz (0, 0, 0.1), rpy (0, 0, 3.14), while
  ``data/franka_panda/panda_longer_finger.urdf`` puts it at xyz (0, 0, 0.14), rpy (0, 0, 0).
  The canonical CALVIN start state (``robot_obs`` used by calvin_agent's evaluation:
  TCP (0.02587, -0.23131, 0.57128), Euler (3.09045, -0.02909, 1.50014)) is reproduced to
  1e-5 by the second one with our base pose and initial joints, and not by the first
  (z 4 cm higher, yaw flipped), so the CALVIN dataset was recorded with the longer-finger
  robot. We use that TCP and lengthen pybullet_data's fingers with a primitive box pad
  (tips 1 cm past the TCP) since the longer-finger mesh is not available here.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pybullet as p
import pybullet_data

from .urdf_util import write_text

BASE_POSITION = (-0.34, -0.46, 0.24)
BASE_ORIENTATION_EULER = (0.0, 0.0, 0.0)
INITIAL_JOINTS = (-1.21779206, 1.03987646, 2.11978261, -2.34205014, -0.87015947, 1.64119353, 0.55344866)
ARM_JOINT_IDS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINT_IDS = (9, 10)
FINGER_LIMITS = (0.0, 0.04)
HAND_LINK_ID = 8
GRIPPER_CAM_LINK_ID = 12
TCP_LINK_ID = 13
MAX_JOINT_FORCE = 200.0
GRIPPER_FORCE = 200.0
MAX_VELOCITY = 2.0
MAX_REL_POS = 0.02
MAX_REL_ORN = 0.05

# Offsets of CALVIN's extra frames relative to panda_hand (see module docstring).
TCP_OFFSET_XYZ = (0.0, 0.0, 0.14)  # panda_longer_finger.urdf (matches CALVIN's recorded robot_obs)
TCP_OFFSET_RPY = (0.0, 0.0, 0.0)
GRIPPER_CAM_OFFSET_XYZ = (-0.1, 0.0, 0.0)
GRIPPER_CAM_OFFSET_RPY = (1.3, 0.0, -1.57)

ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("panda_finger_joint1", "panda_finger_joint2")


def _calvin_frames_xml() -> str:
    def v(t):
        return " ".join(f"{x:.6g}" for x in t)

    return f"""
  <!-- Frames CALVIN adds to the Panda (offsets from mees/calvin_env data/franka_panda/panda.urdf) -->
  <joint name="camera_joint" type="fixed">
    <parent link="panda_hand"/>
    <child link="gripper_cam"/>
    <origin xyz="{v(GRIPPER_CAM_OFFSET_XYZ)}" rpy="{v(GRIPPER_CAM_OFFSET_RPY)}"/>
  </joint>
  <link name="gripper_cam">
    <inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="0.2"/>
      <inertia ixx="0.1" ixy="0" ixz="0" iyy="0.1" iyz="0" izz="0.1"/></inertial>
    <visual><origin xyz="0 0 0" rpy="0 0 0"/><geometry><box size="0.08 0.025 0.01"/></geometry>
      <material name="cam_white"><color rgba="1 1 1 1"/></material></visual>
    <collision><origin xyz="0 0 0" rpy="0 0 0"/><geometry><box size="0.08 0.025 0.01"/></geometry></collision>
  </link>
  <joint name="tcp_joint" type="fixed">
    <parent link="panda_hand"/>
    <child link="tcp"/>
    <origin xyz="{v(TCP_OFFSET_XYZ)}" rpy="{v(TCP_OFFSET_RPY)}"/>
  </joint>
  <link name="tcp">
    <inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="0.00001"/>
      <inertia ixx="0.1" ixy="0" ixz="0" iyy="0.1" iyz="0" izz="0.1"/></inertial>
  </link>
"""


# Finger extension (finger frame): inner face at y = 0 like the original pad, 0.035..0.092 along
# z, i.e. up to 0.150 m from panda_hand along its z axis, 1 cm past the TCP.
FINGER_PAD_SIZE = (0.019, 0.008, 0.057)
FINGER_PAD_Z = 0.0635


def _finger_pad_xml(sign: float) -> str:
    size = " ".join(f"{x:.6g}" for x in FINGER_PAD_SIZE)
    origin = f'<origin xyz="0 {sign * FINGER_PAD_SIZE[1] / 2:.6g} {FINGER_PAD_Z:.6g}" rpy="0 0 0"/>'
    return (
        f'    <visual>{origin}<geometry><box size="{size}"/></geometry>'
        f'<material name="pad_grey"><color rgba="0.3 0.3 0.3 1"/></material></visual>\n'
        f'    <collision>{origin}<geometry><box size="{size}"/></geometry></collision>\n'
    )


def _append_to_link(text: str, link: str, xml: str) -> str:
    start = text.find(f'<link name="{link}">')
    end = text.find("</link>", start)
    if start < 0 or end < 0:
        raise RuntimeError(f"link {link} not found in panda.urdf")
    return text[:end] + xml + text[end:]


def write_panda_urdf(directory: str) -> str:
    """Write pybullet_data's Panda plus CALVIN's gripper-camera and TCP frames; return the path."""
    src_dir = os.path.join(pybullet_data.getDataPath(), "franka_panda")
    with open(os.path.join(src_dir, "panda.urdf"), encoding="utf-8") as f:
        text = f.read()
    mesh_dir = os.path.join(src_dir, "meshes")
    text = re.sub(r'filename="(?:package://)?meshes/', f'filename="{mesh_dir}/', text)
    for link, sign in (("panda_leftfinger", 1.0), ("panda_rightfinger", -1.0)):
        text = _append_to_link(text, link, _finger_pad_xml(sign))
    idx = text.rfind("</robot>")
    if idx < 0:
        raise RuntimeError("unexpected panda.urdf layout")
    text = text[:idx] + _calvin_frames_xml() + text[idx:]
    return write_text(directory, "panda_calvin.urdf", text)


class PandaRobot:
    """Panda with CALVIN-style IK control of the TCP link."""

    def __init__(self, cid: int, urdf_dir: str):
        self.cid = cid
        path = self.urdf_path = write_panda_urdf(urdf_dir)
        self.base_position = np.array(BASE_POSITION, dtype=float)
        self.base_orientation = np.array(p.getQuaternionFromEuler(BASE_ORIENTATION_EULER))
        self.uid = p.loadURDF(
            path,
            basePosition=self.base_position.tolist(),
            baseOrientation=self.base_orientation.tolist(),
            useFixedBase=True,
            flags=p.URDF_USE_INERTIA_FROM_FILE,
            physicsClientId=cid,
        )
        names = [p.getJointInfo(self.uid, i, physicsClientId=cid)[12].decode()
                 for i in range(p.getNumJoints(self.uid, physicsClientId=cid))]
        assert names[GRIPPER_CAM_LINK_ID] == "gripper_cam" and names[TCP_LINK_ID] == "tcp", names
        self._add_base_cylinder()
        c = p.createConstraint(
            self.uid, FINGER_JOINT_IDS[0], self.uid, FINGER_JOINT_IDS[1],
            jointType=p.JOINT_GEAR, jointAxis=[1, 0, 0],
            parentFramePosition=[0, 0, 0], childFramePosition=[0, 0, 0], physicsClientId=cid,
        )
        p.changeConstraint(c, gearRatio=-1, erp=0.1, maxForce=50, physicsClientId=cid)
        n_dof = len(ARM_JOINT_IDS) + len(FINGER_JOINT_IDS)
        self._ll = [-7.0] * n_dof
        self._ul = [7.0] * n_dof
        self._jr = [7.0] * n_dof
        self._rest = list(INITIAL_JOINTS) + [FINGER_LIMITS[1]] * 2
        self.gripper_action = 1
        self.target_pos = np.zeros(3)
        self.target_orn = np.zeros(3)

    def _add_base_cylinder(self) -> None:
        pos = self.base_position.copy()
        pos[2] /= 2
        yaw = BASE_ORIENTATION_EULER[2]
        pos[0] -= np.cos(yaw) * 0.05
        pos[1] -= np.sin(yaw) * 0.05
        vis = p.createVisualShape(p.GEOM_CYLINDER, radius=0.13, length=float(self.base_position[2]),
                                  rgbaColor=[1, 1, 1, 1], physicsClientId=self.cid)
        p.createMultiBody(baseMass=0, baseVisualShapeIndex=vis, basePosition=pos.tolist(), physicsClientId=self.cid)

    # ------------------------------------------------------------------ state
    def reset(self, arm_joints=None, finger_position=None, gripper_action: float = 1) -> None:
        arm = np.asarray(INITIAL_JOINTS if arm_joints is None else arm_joints, dtype=float)
        finger = FINGER_LIMITS[1] if finger_position is None else float(np.clip(finger_position, *FINGER_LIMITS))
        for j, q in zip(ARM_JOINT_IDS, arm):
            p.resetJointState(self.uid, j, float(q), 0.0, physicsClientId=self.cid)
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=float(q),
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY, physicsClientId=self.cid)
        self.gripper_action = 1 if gripper_action >= 0 else -1
        for j in FINGER_JOINT_IDS:
            p.resetJointState(self.uid, j, finger, 0.0, physicsClientId=self.cid)
        self._control_gripper(self.gripper_action)
        self.sync_target_to_tcp()

    def sync_target_to_tcp(self) -> None:
        pos, orn = self.tcp_pose()
        self.target_pos = np.array(pos, dtype=float)
        self.target_orn = np.array(p.getEulerFromQuaternion(orn), dtype=float)

    def tcp_pose(self):
        ls = p.getLinkState(self.uid, TCP_LINK_ID, computeForwardKinematics=True, physicsClientId=self.cid)
        return np.array(ls[4], dtype=float), np.array(ls[5], dtype=float)

    def link_pose(self, link_id: int):
        ls = p.getLinkState(self.uid, link_id, computeForwardKinematics=True, physicsClientId=self.cid)
        return np.array(ls[4], dtype=float), np.array(ls[5], dtype=float)

    def joint_states(self):
        ids = list(ARM_JOINT_IDS) + list(FINGER_JOINT_IDS)
        states = p.getJointStates(self.uid, ids, physicsClientId=self.cid)
        q = np.array([s[0] for s in states], dtype=float)
        dq = np.array([s[1] for s in states], dtype=float)
        return q, dq

    def opening_width(self) -> float:
        q, _ = self.joint_states()
        return float(q[7] + q[8])

    def observation(self) -> np.ndarray:
        pos, orn = self.tcp_pose()
        euler = p.getEulerFromQuaternion(orn)
        q, _ = self.joint_states()
        return np.array([*pos, *euler, q[7] + q[8], *q[:7], float(self.gripper_action)], dtype=np.float64)

    # ---------------------------------------------------------------- control
    def apply_absolute(self, pos, euler, gripper: float) -> None:
        """Move towards an absolute TCP pose. As calvin_env's ``Robot.apply_action``, this leaves the
        running target of relative actions alone: a relative action after it adds to the last
        relative target (or the pose at reset), not to this pose."""
        self._apply_target(np.asarray(pos, dtype=float), np.asarray(euler, dtype=float), gripper)

    def apply_relative(self, rel) -> None:
        rel = np.asarray(rel, dtype=float)
        self.target_pos = self.target_pos + rel[:3] * MAX_REL_POS
        self.target_orn = self.target_orn + rel[3:6] * MAX_REL_ORN
        self._apply_target(self.target_pos, self.target_orn, rel[6])

    def _apply_target(self, pos: np.ndarray, euler: np.ndarray, gripper: float) -> None:
        quat = p.getQuaternionFromEuler(euler.tolist())
        q = p.calculateInverseKinematics(
            self.uid, TCP_LINK_ID, pos.tolist(), quat,
            lowerLimits=self._ll, upperLimits=self._ul, jointRanges=self._jr, restPoses=self._rest,
            maxNumIterations=50, residualThreshold=1e-4, physicsClientId=self.cid,
        )
        for k, j in enumerate(ARM_JOINT_IDS):
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=float(q[k]),
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY, physicsClientId=self.cid)
        self.gripper_action = 1 if gripper >= 0 else -1
        self._control_gripper(self.gripper_action)

    def apply_joints(self, arm_joints, gripper: float) -> None:
        """Drive the arm joints to absolute positions (rad), as a joint position controller does."""
        for j, target in zip(ARM_JOINT_IDS, np.asarray(arm_joints, dtype=float)):
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=float(target),
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY, physicsClientId=self.cid)
        self.gripper_action = 1 if gripper >= 0 else -1
        self._control_gripper(self.gripper_action)

    def _control_gripper(self, action: int) -> None:
        if action >= 0:
            target, force = FINGER_LIMITS[1], GRIPPER_FORCE / 100.0
        else:
            target, force = FINGER_LIMITS[0], GRIPPER_FORCE
        for j in FINGER_JOINT_IDS:
            p.setJointMotorControl2(self.uid, j, p.POSITION_CONTROL, targetPosition=target,
                                    force=force, maxVelocity=1, physicsClientId=self.cid)
