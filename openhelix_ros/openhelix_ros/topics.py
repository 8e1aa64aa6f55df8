"""Default topic names, defined once. Every node takes them as remappable parameters.

Camera topics follow the layout of common RGB-D drivers (``<camera>/color/image_raw``,
``<camera>/depth/image_raw`` registered to color, ``<camera>/color/camera_info``).
"""

INSTRUCTION = "/instruction"
GOAL_EMBEDDING = "/openhelix/goal_embedding"
TRAJECTORY_CHUNK = "/openhelix/trajectory_chunk"
JOINT_STATES = "/joint_states"
EE_POSE = "/ee_pose"
DIAGNOSTICS = "/diagnostics"
SIM_STATUS = "/sim_bridge/status"


def camera_color(camera: str) -> str:
    return f"/cameras/{camera}/color/image_raw"


def camera_depth(camera: str) -> str:
    return f"/cameras/{camera}/depth/image_raw"


def camera_info(camera: str) -> str:
    return f"/cameras/{camera}/color/camera_info"
