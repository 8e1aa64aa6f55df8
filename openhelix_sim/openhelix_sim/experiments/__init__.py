"""The training demo's experiments on the embedded play table: expert demonstrations written as a
CALVIN split, an in-process evaluation of the OpenHelix
:class:`~openhelix_core.runtime.policy.DualSystemPolicy` on the same tasks and its ablations. The
evaluation through the ROS nodes and the learning table that chains everything are in
``openhelix_bringup`` (``openhelix learning-table``), which may start ROS processes.

* :mod:`.demos`: scripted expert demos from the randomised start states
  (:mod:`openhelix_sim.start_states`), written as a CALVIN split;
* :mod:`.in_process`: the policy run in :class:`~openhelix_sim.envs.PlayTableEnv`, executing its
  chunks as the sim bridge does (:class:`~openhelix_sim.execution.ChunkExecutor`);
* :mod:`.variants`: the ablations compared on the same seeds, as models and as checkpoints;
* :mod:`.cli`: ``python -m openhelix_sim.experiments {generate,evaluate} --help``.
"""
