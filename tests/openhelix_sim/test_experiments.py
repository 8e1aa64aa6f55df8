"""openhelix_sim.experiments: expert demos as a CALVIN split, read back for training; in-process
evaluation; the ablation variants."""
import numpy as np
import pytest

pytest.importorskip("pybullet")

from openhelix_core.evaluation.metrics import EvaluationSummary  # noqa: E402
from openhelix_core.evaluation.sequences import TASK_NAMES  # noqa: E402
from openhelix_core.models.system1 import PCD, TRAJECTORY, System1Config  # noqa: E402
from openhelix_core.training.dataset import CameraCalibration, OpenHelixCalvinDataset  # noqa: E402
from openhelix_core.types import TrajectoryChunk  # noqa: E402
from openhelix_sim.envs import PlayTableEnv  # noqa: E402
from openhelix_sim.envs.annotations import validation_annotation  # noqa: E402
from openhelix_sim.envs.calvin_backend import calvin_env_available  # noqa: E402
from openhelix_sim.envs.expert import Expert  # noqa: E402
from openhelix_sim.experiments.demos import demo_chains, generate_chain_demos, generate_demos  # noqa: E402
from openhelix_sim.experiments.in_process import (  # noqa: E402
    dual_system_policy,
    evaluate_chains_in_process,
    evaluate_in_process,
)
from openhelix_sim.experiments.report import chain_table, success_table  # noqa: E402
from openhelix_sim.experiments.variants import (  # noqa: E402
    UNTRAINED_SEED,
    VARIANTS,
    variant_models,
    write_variant_checkpoints,
)
from openhelix_sim.start_states import initial_state  # noqa: E402


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "training"
    info = generate_demos(out, tasks=("open_drawer", "turn_on_led"), episodes_per_task=1, static_size=48,
                          gripper_size=32, workers=1)
    return out, info


def test_generated_demos_read_back_with_the_simulator_calibration(demos):
    out, info = demos
    assert sorted(t for t, _ in info["kept"]) == ["open_drawer", "turn_on_led"] and not info["failed"]
    calib = CameraCalibration.for_split(out)
    assert calib.source.endswith("camera_info.json")
    cfg = System1Config.from_dict({**System1Config.tiny().to_dict(), "trajectory_length": 19})
    ds = OpenHelixCalvinDataset(out, cfg)
    assert {s.instruction for s in ds.segments} == {"pull the handle to open the drawer",
                                                    "press the button to turn on the led light"}
    assert len(ds) > 50 and ds[0][TRAJECTORY].shape == (19, 8)
    # the gripper camera pose the reader computes from robot_obs is the simulator's own
    env = PlayTableEnv(seed=0, image_size_static=48, image_size_gripper=32)
    try:
        obs = initial_state(env, "open_drawer", 0)
        frame = {**obs, "robot_obs": obs["robot_obs"]}
        cams = calib.frames(frame)
        np.testing.assert_allclose(cams["gripper"].camera_to_base, env.camera_to_base("gripper"), atol=1e-6)
        np.testing.assert_allclose(cams["static"].camera_to_base, env.camera_to_base("static"), atol=1e-6)
        np.testing.assert_allclose(cams["gripper"].intrinsics, env.camera_intrinsics("gripper"))
        first = ds.reader.load_frame(ds.segments[0].start)
        np.testing.assert_allclose(first["robot_obs"], obs["robot_obs"], atol=1e-9)  # demo starts at that state
    finally:
        env.close()
    # the point map of the first sample lies in the workspace (table around z = 0.46 m)
    pcd = ds[0][PCD].reshape(2, 3, -1)
    assert 0.0 < float(pcd[0, 2].median()) < 1.0


class ExpertReplayPolicy:
    """A stand-in policy that returns the scripted expert's next actions as chunks."""

    def __init__(self, env, task):
        self.env, self.task, self.plan = env, task, None

    def reset(self, instruction, seed=None):
        self.plan = None

    def act(self, observation):
        from openhelix_core import geometry

        if self.plan is None:
            self.plan = Expert().plan(self.task, self.env)
        actions = [a for _, a in zip(range(10), self.plan)]
        if not actions:
            actions = [np.r_[self.env.robot.target_pos, self.env.robot.target_orn, -1.0]]
        actions = np.array(actions)
        return TrajectoryChunk(positions=actions[:, :3], orientations=geometry.euler_to_quaternion(actions[:, 3:6], "xyz"),
                               gripper_openness=(actions[:, 6] > 0).astype(float),
                               time_from_start=np.arange(1, len(actions) + 1) / 30.0)


@pytest.fixture
def created(monkeypatch):
    """``created["env"]``: the play-table the in-process evaluation builds (for expert-replay policies)."""
    import openhelix_sim.experiments.in_process as in_process

    built = {}
    original = in_process.make_play_table

    def capture_env(*args, **kwargs):
        built["env"] = original(*args, **kwargs)
        return built["env"]

    monkeypatch.setattr(in_process, "make_play_table", capture_env)
    return built


def test_evaluate_in_process_detects_success_and_failure(created):

    class Lazy:
        def __init__(self):
            self.inner = None

        def reset(self, instruction, seed=None):
            assert instruction == "pull the handle to open the drawer"
            self.inner = ExpertReplayPolicy(created["env"], "open_drawer")

        def act(self, observation):
            assert set(observation.cameras) == {"static", "gripper"}
            return self.inner.act(observation)

    ok = evaluate_in_process(Lazy, ["open_drawer"], [3], max_steps=300, static_size=32, gripper_size=32)
    assert ok == {"open_drawer": [True]}

    class Still:
        def reset(self, instruction, seed=None):
            pass

        def act(self, observation):
            return TrajectoryChunk(positions=observation.ee_position[None], orientations=observation.ee_orientation[None],
                                   gripper_openness=np.zeros(1), time_from_start=np.ones(1) / 30)

    assert evaluate_in_process(Still, ["open_drawer"], [3], max_steps=5, static_size=32, gripper_size=32) == \
        {"open_drawer": [False]}
    table = success_table({"a": {"open_drawer": [True, False]}, "b": {"open_drawer": [False, False]}}, [1, 2])
    assert "| open_drawer | 1/2 | 0/2 |" in table and "50 %" in table


def test_chain_demos_follow_calvin_style_sequences_one_demo_per_passed_subtask(tmp_path):
    assert demo_chains(3, seed=0, exclude_seed=0, exclude_count=192) == []  # CALVIN's own list is held out
    chain = demo_chains(1)[0]
    wanted = chain.tasks[1:]  # the first subtask is performed but not written
    info = generate_chain_demos(tmp_path / "training", chains=1, tasks=wanted, static_size=32, gripper_size=32)
    kept = [tuple(k) for k in info["kept"]]
    # the subtasks are done in the chain's order until the first the oracle fails, which ends the chain
    assert [task for task, _, _ in kept] == list(chain.tasks[:len(kept)]) and len(kept) >= 2
    assert [position for _, _, position in kept + [tuple(f) for f in info["failed"]]] == \
        list(range(len(kept) + len(info["failed"])))
    segments = OpenHelixCalvinDataset(tmp_path / "training",
                                      System1Config.from_dict({**System1Config.tiny().to_dict(),
                                                               "trajectory_length": 19})).segments
    written = [task for task, _, _ in kept if task in wanted]
    assert [s.instruction for s in segments] == [validation_annotation(t) for t in written]


def test_chains_in_process_follow_calvins_protocol(created):
    by_sentence = {validation_annotation(task): task for task in TASK_NAMES}

    class ChainExpert:
        def reset(self, instruction, seed=None):
            self.inner = ExpertReplayPolicy(created["env"], by_sentence[instruction])

        def act(self, observation):
            return self.inner.act(observation)

    results = evaluate_chains_in_process(ChainExpert, 2, static_size=32, gripper_size=32)
    assert [r.info["sequence_index"] for r in results] == [0, 1]
    assert all(r.completed >= 1 for r in results)  # the expert does CALVIN's subtasks when asked
    summary = EvaluationSummary.from_lengths([5, 2, 0, 1])
    table = chain_table({"trained": summary})
    assert "| trained | 4 | 75 % | 50 % | 25 % | 25 % | 25 % | 2.00 |" in table


def _tiny_models():
    import torch

    from openhelix_core.models.system1 import DiffuserActor
    from openhelix_core.models.system2 import System2Config, System2Planner

    torch.manual_seed(0)
    return DiffuserActor(System1Config.tiny()), System2Planner(System2Config.tiny())


def _plan(system1, system2, image, instruction):
    return dual_system_policy(system1, system2).planner.plan(image, instruction)


@pytest.mark.skipif(not calvin_env_available(), reason="calvin_env is not installed")
def test_demos_and_in_process_evaluation_in_calvins_own_simulator(tmp_path, created):
    """The learning demo on calvin_env's scene D: demos are kept by CALVIN's own oracle and read
    back with that simulator's calibration; the in-process evaluation is judged by the oracle too."""
    import json

    out = tmp_path / "training"
    info = generate_demos(out, tasks=("open_drawer",), episodes_per_task=1, static_size=32, gripper_size=32,
                          backend="calvin")
    assert [tuple(k) for k in info["kept"]] == [("open_drawer", 0)] and not info["failed"]
    assert json.loads((out / "demos_info.json").read_text())["backend"] == "calvin"
    assert json.loads((out / "camera_info.json").read_text())["source"] == "openhelix_sim.CalvinPlayTableEnv"
    frames = np.load(sorted(out.glob("episode_*.npz"))[0])
    assert frames["rgb_static"].shape == (32, 32, 3) and frames["depth_gripper"].shape == (32, 32)


    class Replay:
        def reset(self, instruction, seed=None):
            self.inner = ExpertReplayPolicy(created["env"], "open_drawer")

        def act(self, observation):
            return self.inner.act(observation)

    assert evaluate_in_process(Replay, ["open_drawer"], [3], max_steps=300, static_size=32, gripper_size=32,
                               backend="calvin") == {"open_drawer": [True]}
    assert type(created["env"]).__name__ == "CalvinPlayTableEnv"


def test_ablated_goals_ignore_image_and_instruction():
    import torch

    system1, system2 = _tiny_models()
    image = np.zeros((32, 32, 3), np.uint8)
    trained_goal = _plan(system1, system2, image, "open the drawer")
    assert not np.array_equal(trained_goal, _plan(system1, system2, image, "turn on the led"))
    zeroed = variant_models(system1, system2, "goal zeroed")
    assert zeroed[0] is system1
    assert not _plan(*zeroed, image, "open the drawer").any() and not _plan(*zeroed, image + 9, "turn on the led").any()
    with pytest.raises(ValueError, match="goal statistics"):
        variant_models(system1, system2, "goal averaged")
    system1.set_goal_statistics(torch.arange(512.0), torch.ones(512))
    averaged = variant_models(system1, system2, "goal averaged")
    np.testing.assert_array_equal(_plan(*averaged, image, "open the drawer"), np.arange(512.0))
    np.testing.assert_array_equal(_plan(*averaged, image + 9, "turn on the led"), np.arange(512.0))
    # the trained models are left as they were
    np.testing.assert_array_equal(_plan(system1, system2, image, "open the drawer"), trained_goal)
    with pytest.raises(ValueError, match="unknown variant"):
        variant_models(system1, system2, "goal halved")


def test_untrained_variant_has_fresh_weights_and_the_same_configs():
    import torch

    system1, system2 = _tiny_models()
    with torch.no_grad():
        system2.projection.weight.mul_(3.0)
    fresh1, fresh2 = variant_models(system1, system2, "untrained")
    assert fresh1.config == system1.config and fresh1.normalization == system1.normalization
    assert fresh2.config == system2.config and fresh2.llava is system2.llava
    trained_state, fresh_state = system1.state_dict(), fresh1.state_dict()
    assert any(not torch.equal(trained_state[k], fresh_state[k]) for k in trained_state)
    assert not torch.equal(fresh2.projection.weight, system2.projection.weight)
    torch.manual_seed(UNTRAINED_SEED + 1)  # reproducible whatever the global RNG was
    again1, _ = variant_models(system1, system2, "untrained")
    assert all(torch.equal(v, again1.state_dict()[k]) for k, v in fresh_state.items())


def test_variant_checkpoints_load_as_the_variants(tmp_path):
    import torch

    from openhelix_core.training.trainer import load_models_from_checkpoint

    system1, system2 = _tiny_models()
    system1.set_goal_statistics(torch.full((512,), 0.5), torch.ones(512))
    system1.save_pretrained(tmp_path / "final" / "system1")
    system2.save_pretrained(tmp_path / "final" / "system2")
    paths = write_variant_checkpoints(tmp_path / "final", tmp_path / "variants")
    assert list(paths) == list(VARIANTS) and paths["trained"] == tmp_path / "final"
    assert paths["goal zeroed"] == tmp_path / "variants" / "goal_zeroed"
    image = np.full((32, 32, 3), 40, np.uint8)
    loaded = {name: load_models_from_checkpoint(path) for name, path in paths.items()}
    assert not _plan(*loaded["goal zeroed"], image, "open the drawer").any()
    np.testing.assert_allclose(_plan(*loaded["goal averaged"], image, "open the drawer"), np.full(512, 0.5))
    expected = variant_models(system1, system2, "untrained")[0].state_dict()
    assert all(torch.equal(v, loaded["untrained"][0].state_dict()[k]) for k, v in expected.items())
