"""Recording and replaying rosbag2 bags of the policy's topics.

``io`` reads and writes bags with the ``rosbags`` library (sqlite3 and mcap, with the
definitions of our own message types), ``salvage`` recovers what a damaged bag still holds, and
``player_node`` / ``recorder_node`` are the ROS nodes (the only modules here that import rclpy).
Scoring what was replayed needs no ROS and lives in :mod:`openhelix_core.evaluation.bag_scoring`
and :mod:`openhelix_core.evaluation.bag_report`; ``openhelix bag-eval`` / ``bag-record`` are in
``openhelix_bringup``.
"""
