"""Pure-Python simulated environments (no ROS imports here)."""

from .play_table import PlayTableEnv

__all__ = ["PlayTableEnv"]
