"""QoS profiles shared by the nodes, defined once."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# Instructions are set rarely and must reach nodes that start later.
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Goals and trajectory chunks: few, small and each one matters.
RELIABLE = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
# Camera and state inputs of the models: only the newest sample matters, and a deeper queue
# would make a busy node work through stale frames.
LATEST_SENSOR = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                           durability=DurabilityPolicy.VOLATILE)
# The e-stop must connect to a publisher of any common QoS: a best-effort, volatile reader
# matches every writer. (LATCHED beside it receives the state of a latched e-stop that was
# set before this node started.)
ANY_PUBLISHER = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                           durability=DurabilityPolicy.VOLATILE)
# Command streams to a driver: a reliable writer matches readers of either reliability (ros2_control
# controllers read with the reliable default); keeping only the newest means it never blocks.
COMMAND_STREAM = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
