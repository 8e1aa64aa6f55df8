"""Helpers shared by the simulator tests."""
import numpy as np


def settle(env, steps: int = 4) -> None:
    """Lets the scene come to rest (contacts exist only after physics steps) with the arm held."""
    hold = np.r_[env.robot.target_pos, env.robot.target_orn, 1.0]
    for _ in range(steps):
        env.step(hold)
