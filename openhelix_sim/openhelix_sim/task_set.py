"""The episodes of the training demo: which tasks, which seeds, which scenes.

The demos, the in-process evaluation, the sim bridge's ``protocol: tasks`` and ``openhelix
eval-calvin --protocol tasks`` all read these, so that they score the same episodes. This module
imports nothing else (no simulator): the ``openhelix`` command reads it at start-up.
"""

#: The six tasks of the learning table: the scripted expert performs them and their start states
#: leave only the instruction to tell them apart (see :mod:`openhelix_sim.start_states`).
DEFAULT_TASKS = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led",
                 "turn_on_lightbulb")

#: First held-out start-state seed: demos use seeds below it, evaluations seeds from it on.
EVAL_SEED_OFFSET = 100_000

#: Held-out episodes (consecutive seeds from :data:`EVAL_SEED_OFFSET`) per task in an evaluation.
EVAL_EPISODES_PER_TASK = 5

#: Camera image sides (px) of the demos and of the evaluations of policies trained on them.
DEMO_IMAGE_SIZES = {"static": 64, "gripper": 48}

#: Simulator steps (30 Hz) an episode may take before it counts as failed.
EPISODE_MAX_STEPS = 240

#: Waypoints executed per System 1 call: the whole trajectory to the next keypose (the demos'
#: trajectories are interpolated to 20 waypoints, the first of which is the current pose).
EXECUTION_HORIZON = 19

#: ``"task"``: a fixed scene but the task's joint and the arm; ``"full"``: random scenes;
#: ``"calvin"``: CALVIN's scene-D reset states (see :mod:`openhelix_sim.start_states`).
SCENE_VARIATIONS = ("task", "full", "calvin")
