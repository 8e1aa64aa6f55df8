"""The training demo's experiments on the embedded play table: expert demonstrations written as a
CALVIN split, an in-process evaluation of the OpenHelix
:class:`~openhelix_core.policy.DualSystemPolicy` on the same tasks, its ablations, the same
evaluation through the ROS nodes, and the pipeline that chains them.

* :mod:`.demos`: scripted expert demos from the randomised start states
  (:mod:`openhelix_sim.start_states`), written as a CALVIN split;
* :mod:`.in_process`: the policy run in :class:`~openhelix_sim.envs.PlayTableEnv`, executing its
  chunks as the sim bridge does (:class:`~openhelix_sim.execution.ChunkExecutor`);
* :mod:`.variants`: the ablations compared on the same seeds, as models and as checkpoints;
* :mod:`.ros_evaluation`: the same episodes through the ROS nodes (``openhelix eval-calvin
  --protocol tasks`` in a subprocess; this package imports no ROS);
* :mod:`.pipeline`: demos -> stage 1 -> stage 2 -> every variant in process and through ROS;
* :mod:`.cli`: ``python -m openhelix_sim.experiments {generate,evaluate,pipeline} --help``.
"""
