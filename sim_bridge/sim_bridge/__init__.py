"""Simulator bridge: simulated environments (pure Python) and the ROS node around them."""
