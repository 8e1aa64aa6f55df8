"""ROS 2 nodes of the OpenHelix policy; they convert messages and call openhelix_core."""
