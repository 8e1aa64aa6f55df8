"""CALVIN task success checks (openhelix_sim.envs.tasks): constructed states and expert motions."""

import numpy as np
import pytest

pytest.importorskip("pybullet")

from sim_helpers import settle  # noqa: E402

from openhelix_sim.envs.annotations import ANNOTATIONS, validation_annotation  # noqa: E402
from openhelix_sim.envs.expert import Expert  # noqa: E402
from openhelix_sim.envs.tasks import (  # noqa: E402
    TASKS,
    BlockState,
    SceneState,
    completed_tasks,
    task_succeeded,
)

TABLE_TOP = ("table", "base_link")
PLANK = ("table", "plank_link")
DRAWER = ("table", "drawer_link")
FINGER = ("robot", "panda_leftfinger")


def quat_z(angle_deg, tilt_x_deg=0.0):
    """Quaternion (xyzw) of Rz(angle) @ Rx(tilt)."""
    a, t = np.radians(angle_deg) / 2, np.radians(tilt_x_deg) / 2
    qz = np.array([0, 0, np.sin(a), np.cos(a)])
    qx = np.array([np.sin(t), 0, 0, np.cos(t)])
    x1, y1, z1, w1 = qz
    x2, y2, z2, w2 = qx
    return np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])


def block(pos=(0.0, -0.1, 0.48), yaw=0.0, contacts=(TABLE_TOP,), tilt=0.0, vel=0.0):
    return BlockState(np.array(pos, dtype=float), quat_z(yaw, tilt), np.full(3, vel), np.zeros(3), frozenset(contacts))


def state(joints=None, lights=None, robot=(), **blocks):
    j = {"base__slide": 0.0, "base__drawer": 0.0, "base__button": 0.0, "base__switch": 0.0}
    j.update(joints or {})
    bl = {"block_red": block((0.2, -0.1, 0.48)), "block_blue": block((-0.2, 0.09, 0.48), contacts=(PLANK,)),
          "block_pink": block((0.05, 0.09, 0.48), contacts=(PLANK,))}
    bl.update({f"block_{k}": v for k, v in blocks.items()})
    return SceneState(joints=j, lights={"lightbulb": 0, "led": 0, **(lights or {})}, blocks=bl, robot_contacts=frozenset(robot))


# ------------------------------------------------------------------------ task list
def test_task_list_matches_calvin():
    assert len(TASKS) == 34 and len(set(TASKS)) == 34
    expected = {f"{k}_{c}_block_{d}" for c in ("red", "blue", "pink") for k, ds in
                (("rotate", ("left", "right")), ("push", ("left", "right")), ("lift", ("table", "slider", "drawer")))
                for d in ds}
    expected |= {"move_slider_left", "move_slider_right", "open_drawer", "close_drawer", "place_in_slider",
                 "place_in_drawer", "stack_block", "unstack_block", "turn_on_lightbulb", "turn_off_lightbulb",
                 "turn_on_led", "turn_off_led", "push_into_drawer"}
    assert set(TASKS) == expected
    s = state()
    with pytest.raises(ValueError, match="fly_away"):
        task_succeeded("fly_away", s, s)
    assert completed_tasks(s, s) == set()


def test_annotations_cover_every_task_with_calvin_validation_sentence_first():
    assert set(ANNOTATIONS) == set(TASKS)
    assert all(len(v) >= 3 and len(set(v)) == len(v) for v in ANNOTATIONS.values())
    assert validation_annotation("open_drawer") == "pull the handle to open the drawer"
    assert validation_annotation("move_slider_left") == "push the sliding door to the left side"
    assert validation_annotation("push_pink_block_right") == "go push the pink block right"
    assert validation_annotation("lift_red_block_drawer") == "Take the red block from the drawer"
    assert validation_annotation("turn_off_led") == "press the button to turn off the led light"
    with pytest.raises(ValueError):
        validation_annotation("nope")


# ------------------------------------------------------------ constructed states
def test_rotate_checks():
    s0 = state(red=block(yaw=10.0))
    left = state(red=block(yaw=100.0))
    assert completed_tasks(s0, left) == {"rotate_red_block_left"}
    assert completed_tasks(s0, state(red=block(yaw=-60.0))) == {"rotate_red_block_right"}
    assert completed_tasks(s0, state(red=block(yaw=65.0))) == set()  # only 55 deg
    assert not task_succeeded("rotate_red_block_left", s0, state(red=block(yaw=100.0, tilt=35.0)))
    assert not task_succeeded("rotate_red_block_left", s0, state(red=block((0.0, -0.22, 0.48), yaw=100.0)))
    assert not task_succeeded("rotate_red_block_left", s0, state(red=block(yaw=100.0, contacts=(FINGER,))))
    assert task_succeeded("rotate_red_block_left", s0, state(red=block(yaw=100.0, contacts=(FINGER, TABLE_TOP))))


def test_push_checks():
    s0 = state(red=block((0.1, -0.1, 0.48)))
    assert completed_tasks(s0, state(red=block((-0.02, -0.1, 0.48)))) == {"push_red_block_left"}
    assert completed_tasks(s0, state(red=block((0.22, -0.1, 0.48), contacts=(TABLE_TOP, FINGER)))) == {
        "push_red_block_right"}
    assert completed_tasks(s0, state(red=block((0.18, -0.1, 0.48)))) == set()
    # the block must rest on the same bodies (other than the robot) at both times
    assert not task_succeeded("push_red_block_left", s0, state(red=block((-0.02, -0.1, 0.48), contacts=(FINGER,))))
    assert not task_succeeded("push_red_block_left", s0, state(red=block((-0.02, -0.1, 0.48),
                                                                          contacts=(TABLE_TOP, ("block_blue", "base")))))


def test_door_and_light_checks():
    s0 = state(joints={"base__slide": 0.05, "base__drawer": 0.2}, lights={"led": 1})
    s1 = state(joints={"base__slide": 0.21, "base__drawer": 0.05}, lights={"led": 0, "lightbulb": 1})
    assert completed_tasks(s0, s1) == {"move_slider_left", "close_drawer", "turn_off_led", "turn_on_lightbulb"}
    assert completed_tasks(s1, s0) == {"move_slider_right", "open_drawer", "turn_on_led", "turn_off_lightbulb"}
    # just under the thresholds (0.15 / 0.12)
    s2 = state(joints={"base__slide": 0.195, "base__drawer": 0.315})
    assert completed_tasks(s0, s2) == {"turn_off_led"}


@pytest.mark.parametrize("surface, contact, dz_ok, dz_bad", [("table", TABLE_TOP, 0.051, 0.049),
                                                              ("slider", PLANK, 0.031, 0.029),
                                                              ("drawer", DRAWER, 0.051, 0.049)])
def test_lift_checks(surface, contact, dz_ok, dz_bad):
    s0 = state(red=block((0.1, -0.1, 0.48), contacts=(contact,)))
    lifted = state(red=block((0.1, -0.1, 0.48 + dz_ok), contacts=(FINGER, ("robot", "panda_rightfinger"))),
                   robot=(("block_red", "base"),))
    assert completed_tasks(s0, lifted) == {f"lift_red_block_{surface}"}
    assert completed_tasks(s0, state(red=block((0.1, -0.1, 0.48 + dz_bad), contacts=(FINGER,)))) == set()
    # something besides the robot touches it, or the robot already held it
    assert not task_succeeded(f"lift_red_block_{surface}", s0,
                              state(red=block((0.1, -0.1, 0.6), contacts=(FINGER, ("block_blue", "base")))))
    held = state(red=block((0.1, -0.1, 0.48), contacts=(contact, FINGER)))
    assert not task_succeeded(f"lift_red_block_{surface}", held, lifted)


def test_place_checks():
    held = state(red=block((0.1, -0.2, 0.6), contacts=(FINGER,)), robot=(("block_red", "base"),))
    in_drawer = state(red=block((0.1, -0.3, 0.3), contacts=(DRAWER,)))
    in_slider = state(red=block((0.0, 0.08, 0.48), contacts=(PLANK,)))
    assert completed_tasks(held, in_drawer) == {"place_in_drawer"}
    assert "place_in_slider" in completed_tasks(held, in_slider)
    assert "place_in_slider" not in completed_tasks(held, in_drawer)
    # still holding at the end
    assert not task_succeeded("place_in_drawer", held, state(red=block((0.1, -0.3, 0.3), contacts=(DRAWER, FINGER)),
                                                             robot=(("block_red", "base"),)))
    # the robot also touched the table at the start: not "holding exactly one object"
    busy = state(red=block((0.1, -0.2, 0.6), contacts=(FINGER,)), robot=(("block_red", "base"), TABLE_TOP))
    assert not task_succeeded("place_in_drawer", busy, in_drawer)


def test_stack_and_unstack_checks():
    s0 = state(red=block((0.1, -0.1, 0.48)), blue=block((0.0, -0.1, 0.48)))
    stacked = state(red=block((0.0, -0.1, 0.52), contacts=(("block_blue", "base"),)),
                    blue=block((0.0, -0.1, 0.48), contacts=(TABLE_TOP, ("block_red", "base"))))
    assert completed_tasks(s0, stacked) == {"stack_block"}
    fast = state(red=block((0.0, -0.1, 0.52), contacts=(("block_blue", "base"),), vel=1.2),
                 blue=block((0.0, -0.1, 0.48), contacts=(TABLE_TOP, ("block_red", "base"))))
    assert not task_succeeded("stack_block", s0, fast)
    # still in the gripper: touches the robot too
    held = state(red=block((0.0, -0.1, 0.52), contacts=(("block_blue", "base"), FINGER)),
                 blue=block((0.0, -0.1, 0.48), contacts=(TABLE_TOP, ("block_red", "base"))))
    assert not task_succeeded("stack_block", s0, held)
    assert "unstack_block" in completed_tasks(stacked, s0)
    assert not task_succeeded("unstack_block", fast, s0)


def test_push_into_drawer_checks():
    s0 = state(red=block((0.1, -0.2, 0.48)))
    s1 = state(red=block((0.1, -0.3, 0.3), contacts=(DRAWER,)))
    assert completed_tasks(s0, s1) == {"push_into_drawer"}
    assert not task_succeeded("push_into_drawer", s0, state(red=block((0.1, -0.3, 0.3), contacts=(DRAWER, FINGER))))
    assert not task_succeeded("push_into_drawer", state(red=block((0.1, -0.2, 0.48), contacts=(TABLE_TOP, FINGER))), s1)


# ------------------------------------------------------------------ live captures
def known_scene(drawer=0.0, slide=0.0, switch=0.0, led=0.0, red=(0.2, -0.1), red_yaw=0.0, blue=(-0.24, 0.09),
                blue_yaw=0.3, pink=(0.07, 0.09), pink_yaw=-0.2):
    return np.array([slide, drawer, 0.0, switch, float(switch > 0.044), led,
                     red[0], red[1], 0.46, 0, 0, red_yaw, blue[0], blue[1], 0.46, 0, 0, blue_yaw,
                     pink[0], pink[1], 0.46, 0, 0, pink_yaw])


def run_task(env, task, **scene_kw):
    env.reset(scene_obs=known_scene(**scene_kw))
    settle(env)
    start = SceneState.capture(env)
    steps = Expert().run(task, env)
    return start, SceneState.capture(env), steps


def test_capture_labels_contacts(env):
    env.reset(scene_obs=known_scene(drawer=0.2))
    settle(env)
    s = SceneState.capture(env)
    assert s.blocks["block_red"].contacts == {("table", "base_link")}
    assert s.blocks["block_blue"].contacts == {("table", "plank_link")}
    assert s.blocks["block_pink"].contacts == {("table", "plank_link")}
    assert s.robot_contacts == frozenset()
    assert abs(s.joints["base__drawer"] - 0.2) < 0.005 and s.lights == {"lightbulb": 0, "led": 0}
    np.testing.assert_allclose(s.blocks["block_red"].pos, [0.2, -0.1, 0.46], atol=2e-3)  # box centre


# task, scene, tasks that must not fire on that motion
EXPERT_CASES = [
    ("open_drawer", {}, ["close_drawer", "move_slider_left", "move_slider_right"]),
    ("close_drawer", {"drawer": 0.2}, ["open_drawer"]),
    ("move_slider_left", {}, ["move_slider_right", "open_drawer", "close_drawer"]),
    ("move_slider_right", {"slide": 0.28}, ["move_slider_left", "open_drawer"]),
    ("turn_on_led", {}, ["turn_off_led", "turn_on_lightbulb"]),
    ("turn_off_led", {"led": 1.0}, ["turn_on_led"]),
    ("turn_on_lightbulb", {}, ["turn_off_lightbulb", "turn_on_led"]),
    ("turn_off_lightbulb", {"switch": 0.088}, ["turn_on_lightbulb", "turn_off_led"]),
    ("push_red_block_left", {}, ["push_red_block_right", "lift_red_block_table", "rotate_red_block_left"]),
    ("push_red_block_right", {"red": (0.0, -0.1), "red_yaw": 0.7}, ["push_red_block_left"]),
    ("lift_blue_block_table", {"blue": (0.0, -0.12), "blue_yaw": -1.0}, ["lift_blue_block_slider", "lift_red_block_table"]),
    ("rotate_red_block_left", {"red": (0.1, -0.15), "red_yaw": 0.3}, ["rotate_red_block_right", "push_red_block_left"]),
    ("rotate_pink_block_right", {"pink": (0.05, -0.13), "pink_yaw": 2.0}, ["rotate_pink_block_left"]),
    ("stack_block", {"red": (0.1, -0.15), "blue": (0.25, -0.12)}, ["unstack_block", "lift_red_block_table"]),
]


@pytest.mark.parametrize("task, scene_kw, wrong", EXPERT_CASES, ids=[c[0] for c in EXPERT_CASES])
def test_check_fires_on_expert_motion_only(env, task, scene_kw, wrong):
    start, end, steps = run_task(env, task, **scene_kw)
    assert steps <= 360
    assert task_succeeded(task, start, end), (task, completed_tasks(start, end))
    for other in wrong:
        assert not task_succeeded(other, start, end), (task, other)


def test_completed_tasks_after_drawer_opening_is_just_open_drawer(env):
    start, end, _ = run_task(env, "open_drawer")
    assert completed_tasks(start, end) == {"open_drawer"}
    # a slider motion does not count as a drawer opening (and vice versa)
    start, end, _ = run_task(env, "move_slider_left")
    assert completed_tasks(start, end) == {"move_slider_left"}


def test_lift_then_place_in_drawer_and_unstack_live(env):
    env.reset(scene_obs=known_scene(drawer=0.2, red=(0.0, -0.12), red_yaw=0.4))
    settle(env)
    ex = Expert()
    s0 = SceneState.capture(env)
    ex.run("lift_red_block_table", env)
    s1 = SceneState.capture(env)
    assert completed_tasks(s0, s1) == {"lift_red_block_table"}
    assert s1.robot_bodies == {"block_red"}
    ex.run("place_in_drawer", env)
    s2 = SceneState.capture(env)
    assert "place_in_drawer" in completed_tasks(s1, s2)
    assert not task_succeeded("place_in_slider", s1, s2)
    assert ("table", "drawer_link") in s2.blocks["block_red"].contacts
