"""The simulated play table OpenHelix is evaluated and trained on, without ROS.

* :mod:`openhelix_sim.envs`: the PyBullet play table (CALVIN scene D), its robot, cameras,
  scene, CALVIN's tasks and success checks, the scripted expert, and the adapter to CALVIN's own
  ``calvin_env``;
* :mod:`openhelix_sim.task_set` and :mod:`openhelix_sim.start_states`: the tasks, held-out
  seeds and randomised start states that the demos and every evaluation share;
* :mod:`openhelix_sim.execution`: how the simulated arm executes trajectory chunks and command
  streams;
* :mod:`openhelix_sim.evaluation_runner`: CALVIN's protocol and the single-task protocol;
* :mod:`openhelix_sim.experiments`: demo writing, in-process evaluation, ablations and the
  learning pipeline (``python -m openhelix_sim.experiments --help``).

The ROS node around the simulator is the ``sim_bridge`` package. Nothing here imports rclpy.
"""
