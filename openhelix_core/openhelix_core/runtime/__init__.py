"""The policy at run time, free of ROS: what the nodes, the simulator and the evaluations call.

* :mod:`.planner` -- System 2 loaded for inference (:class:`~.planner.GoalPlanner`): image +
  instruction -> goal embedding;
* :mod:`.controller` -- System 1 loaded for inference (:class:`~.controller.TrajectoryController`):
  observation + goal -> trajectory chunk;
* :mod:`.policy` -- both systems in one process (:class:`~.policy.DualSystemPolicy`);
* :mod:`.chunking` -- chunks on a clock: blending, the command stream a real arm follows;
* :mod:`.safety` -- limits, watchdogs, e-stop latch;
* :mod:`.joint_commands` -- TCP commands to joint trajectory points for ros2_control (IK);
* :mod:`.worker` -- the model thread that keeps slow inference off the command stream;
* :mod:`.devices` -- torch device and CPU-thread settings of a robot process.
"""
