"""Language annotations for CALVIN's 34 tasks.

For every task the first sentence is the one CALVIN's evaluation gives the policy
(``lang_annotation = val_annotations[subtask][0]`` in ``calvin_agent/evaluation/
evaluate_policy.py``, loaded from ``calvin_models/conf/annotations/new_playtable_validation.yaml``
of mees/calvin). The following ones are a few of the training-set phrasings of
``calvin_models/conf/annotations/new_playtable.yaml`` (same repository).
"""

from __future__ import annotations

from typing import Dict, Tuple

from .tasks import COLORS, TASKS


def _build() -> Dict[str, Tuple[str, ...]]:
    ann: Dict[str, Tuple[str, ...]] = {}
    for c in COLORS:
        for side in ("right", "left"):
            ann[f"rotate_{c}_block_{side}"] = (
                f"take the {c} block and rotate it to the {side}",
                f"rotate the {c} block to the {side}",
                f"grasp the {c} block and turn it {side}",
                f"turn the {c} block {side}",
            )
            ann[f"push_{c}_block_{side}"] = (
                f"go push the {c} block {side}",
                f"push the {c} block to the {side}",
                f"slide the {c} block towards the {side}",
                f"sweep the {c} block to the {side}",
            )
    for side in ("left", "right"):
        ann[f"move_slider_{side}"] = (
            f"push the sliding door to the {side} side",
            f"slide the door to the {side}",
            f"move the door all the way to the {side}",
            f"grasp the door handle and slide the door to the {side}",
        )
    ann["open_drawer"] = ("pull the handle to open the drawer", "open the drawer", "pull the drawer",
                          "grasp the drawer handle and open it")
    ann["close_drawer"] = ("push the handle to close the drawer", "close the drawer", "push the drawer",
                           "grasp the drawer handle and close it")
    for c in COLORS:
        ann[f"lift_{c}_block_table"] = (f"grasp and lift the {c} block", f"lift the {c} block from the table",
                                        f"pick up the {c} block", f"grasp the {c} block and lift it up")
        ann[f"lift_{c}_block_slider"] = (f"lift the {c} block from the sliding cabinet",
                                         f"pick up the {c} block from the shelf",
                                         f"grasp the {c} block lying in the sliding cabinet",
                                         f"in the slider pick up the {c} block")
        ann[f"lift_{c}_block_drawer"] = (f"Take the {c} block from the drawer", f"grasp the {c} block in the drawer",
                                         f"pick up the {c} block lying in the drawer",
                                         f"lift the {c} block in the drawer")
    ann["place_in_slider"] = ("store the grasped block in the sliding cabinet", "put the block in the sliding cabinet",
                              "place the grasped object in the cabinet", "put it in the slider")
    ann["place_in_drawer"] = ("store the grasped block in the drawer", "put the block in the drawer",
                              "place the grasped object in the drawer", "move to the drawer and store the object")
    ann["push_into_drawer"] = ("slide the block that it falls into the drawer", "push the block into the drawer",
                               "sweep the object into the drawer")
    ann["stack_block"] = ("stack the grasped block", "stack the blocks", "place the block on top of another block")
    ann["unstack_block"] = ("remove the stacked block", "unstack the blocks", "take off the stacked block",
                            "remove the top block")
    ann["turn_on_lightbulb"] = ("use the switch to turn on the light bulb", "turn on the light bulb",
                                "turn on the yellow light", "push the switch upwards")
    ann["turn_off_lightbulb"] = ("use the switch to turn off the light bulb", "turn off the light bulb",
                                 "turn off the yellow light", "push the switch downwards")
    ann["turn_on_led"] = ("press the button to turn on the led light", "turn on the led", "turn on the green light",
                          "push down the button to turn on the led light")
    ann["turn_off_led"] = ("press the button to turn off the led light", "turn off the led", "turn off the green light",
                           "push down the button to turn off the led light")
    return {t: ann[t] for t in TASKS}


ANNOTATIONS: Dict[str, Tuple[str, ...]] = _build()


def validation_annotation(task: str) -> str:
    """The sentence CALVIN's evaluation uses for ``task``."""
    if task not in ANNOTATIONS:
        raise ValueError(f"unknown CALVIN task {task!r}")
    return ANNOTATIONS[task][0]
