"""Batch keys of System 1 (defined once; import them, never retype the strings).

Shapes use ``B`` batch, ``ncam`` cameras, ``H = W = config.image_size``,
``L`` goal tokens, ``nhist`` proprioceptive states, ``T`` waypoints.
"""

#: ``(B, ncam, 3, H, W)`` float RGB in [0, 1], cameras in ``config.cameras`` order.
RGB = "rgb"
#: ``(B, ncam, 3, H, W)`` float point map: base-frame xyz (metres) of every pixel.
PCD = "pcd"
#: ``(B, L, goal_dim)`` float System 2 goal / instruction tokens (OpenHelix: L = 1, 512-D).
GOAL = "goal"
#: ``(B, nhist, 8)`` gripper states, oldest first (last = current):
#: ``[x, y, z, qx, qy, qz, qw, openness]``, absolute, openness in [0, 1].
CURRENT_GRIPPER = "current_gripper"
#: ``(B, T, 8)`` training target, absolute ``[x, y, z, qx, qy, qz, qw, openness]``
#: of the next ``T`` waypoints (not including the current pose).
TRAJECTORY = "trajectory"

__all__ = ["CURRENT_GRIPPER", "GOAL", "PCD", "RGB", "TRAJECTORY"]
