"""OpenHelix dual-system policy: models, policy, data and evaluation logic.

Pure Python and PyTorch; nothing in this package imports rclpy, so it runs and is tested
without ROS. The ROS nodes in ``openhelix_ros`` and ``sim_bridge`` only convert messages
and call into this package.
"""
