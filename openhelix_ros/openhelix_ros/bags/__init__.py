"""Recording, replaying and scoring rosbag2 bags of the policy's topics.

``io`` reads and writes bags with the ``rosbags`` library (sqlite3 and mcap, with the
definitions of our own message types), ``player_node`` / ``recorder_node`` are the ROS nodes,
``scoring`` pairs produced trajectory chunks with what the bag recorded afterwards,
``report`` writes JSON / HTML / PNG, and ``cli`` is ``openhelix bag-eval`` / ``bag-record``.
Only ``player_node``, ``recorder_node`` and ``cli`` import rclpy.
"""
