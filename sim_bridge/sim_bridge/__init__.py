"""Simulator bridge: the ROS node that shows the openhelix_sim play table through the topics of a real camera and arm."""
