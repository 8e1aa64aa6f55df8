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
TF = "/tf"
TF_STATIC = "/tf_static"
CLOCK = "/clock"
# The fixed transforms (camera extrinsics, hand-eye) as latched geometry_msgs/TransformStamped
# messages, one per transform: readable where tf2_msgs is not installed (the PyPI wheels).
STATIC_TRANSFORMS = "/openhelix/static_transforms"


def camera_color(camera: str) -> str:
    return f"/cameras/{camera}/color/image_raw"


def camera_depth(camera: str) -> str:
    return f"/cameras/{camera}/depth/image_raw"


def camera_info(camera: str) -> str:
    return f"/cameras/{camera}/color/camera_info"

ESTOP = "/openhelix/estop"
POSE_COMMAND = "/openhelix/command/ee_pose"
GRIPPER_COMMAND = "/openhelix/command/gripper"
# Off unless the controller is given joint_trajectory_topic; the sim bridge listens here.
JOINT_TRAJECTORY_COMMAND = "/openhelix/command/joint_trajectory"
# The URDF as robot_state_publisher serves it (std_msgs/String, latched).
ROBOT_DESCRIPTION = "/robot_description"
GOAL_AGE = "/openhelix/controller/goal_age"
STEPS_PER_GOAL = "/openhelix/controller/system1_steps_per_goal"
POLICY_POINT_CLOUD = "/openhelix/controller/point_cloud"
POLICY_MARKERS = "/openhelix/controller/planned_path"
