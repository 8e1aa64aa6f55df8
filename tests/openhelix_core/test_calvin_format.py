"""CALVIN dataset format writer / reader (openhelix_core.data.calvin_format), pure numpy."""

import numpy as np
import pytest

from openhelix_core.data import CalvinDataset, CalvinEpisodeWriter, load_npy, to_relative_action
from openhelix_core.data.calvin_format import episode_filename


def fake_obs(rng, t):
    return {
        "robot_obs": np.r_[0.1 * t, 0.0, 0.5, 3.1, 0.0, 1.5, 0.08, np.zeros(7), 1.0],
        "scene_obs": rng.normal(size=24),
        "rgb_static": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        "depth_static": rng.random((16, 16), dtype=np.float32),
        "depth_gripper": rng.random((8, 8), dtype=np.float32),
    }


def test_relative_action_matches_calvin_definition():
    robot_obs = np.r_[0.1, 0.2, 0.5, 3.13, 0.0, -3.1, np.zeros(9)]
    action = np.array([0.11, 0.15, 0.5, -3.13, 0.02, 3.12, -1.0])
    rel = to_relative_action(action, robot_obs)
    # x +0.01 -> 0.5; y -0.05 -> clipped to -1; roll 3.13 -> -3.13 wraps to +0.023 rad -> 0.46;
    # yaw -3.1 -> 3.12 wraps to -0.063 -> clipped -1; gripper copied
    np.testing.assert_allclose(rel, [0.5, -1.0, 0.0, (2 * np.pi - 6.26) / 0.05, 0.4, -1.0, -1.0], atol=1e-6)
    with pytest.raises(ValueError):
        to_relative_action(np.zeros(6), robot_obs)


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "training"
    with CalvinEpisodeWriter(out, embedding_fn=lambda anns: np.ones((len(anns), 4))) as w:
        for ep in range(2):
            s = w.start_episode()
            for t in range(5):
                w.add_frame(fake_obs(rng, t), np.r_[0.1 * t + 0.01, 0.0, 0.5, 3.1, 0.0, 1.5, 1.0])
            w.annotate(s, w.last_index, "open_drawer", "pull the handle to open the drawer")
            w.end_episode()
    assert (out / episode_filename(0)).name == "episode_0000000.npz"
    ds = CalvinDataset(out)
    assert len(ds) == 10
    np.testing.assert_array_equal(ds.episodes(), [[0, 4], [5, 9]])
    assert ds.annotated_segments() == [(0, 4, "open_drawer", "pull the handle to open the drawer"),
                                       (5, 9, "open_drawer", "pull the handle to open the drawer")]
    assert ds.embeddings().shape == (2, 4)
    f = ds.load_frame(7)
    assert set(f) == {"actions", "rel_actions", "robot_obs", "scene_obs", "rgb_static", "rgb_gripper",
                      "depth_static", "depth_gripper"}
    assert f["rgb_static"].dtype == np.uint8 and f["depth_gripper"].dtype == np.float32
    assert f["actions"].shape == (7,) and f["robot_obs"].shape == (15,) and f["scene_obs"].shape == (24,)
    np.testing.assert_allclose(f["rel_actions"], to_relative_action(f["actions"], f["robot_obs"]))
    r = ds.load_range(5, 9)
    assert r["actions"].shape == (5, 7)
    with pytest.raises(IndexError):
        ds.load_frame(10)

    # the raw language file has CALVIN's structure
    lang = load_npy(out / "lang_annotations" / "auto_lang_ann.npy").item()
    assert set(lang) == {"language", "info"} and lang["info"]["indx"] == [(0, 4), (5, 9)]
    assert lang["language"]["task"] == ["open_drawer"] * 2


def test_reader_handles_calvin_layout_and_refuses_pickled_frames(tmp_path):
    root = tmp_path / "task_D_D"
    for split, offset in (("training", 100), ("validation", 0)):
        d = root / split
        d.mkdir(parents=True)
        rng = np.random.default_rng(1)
        for i in range(offset, offset + 3):
            o = fake_obs(rng, i)
            np.savez(d / f"episode_{i:07d}.npz", actions=np.zeros(7), rel_actions=np.zeros(7), **o)
        np.save(d / "ep_start_end_ids.npy", np.array([[offset, offset + 2]]))
        (d / "lang_annotations").mkdir()
        lang = {"language": {"ann": ["open the drawer"], "task": ["open_drawer"], "emb": np.zeros((1, 384))},
                "info": {"episodes": [], "indx": [(offset, offset + 2)]}}
        np.save(d / "lang_annotations" / "auto_lang_ann.npy", lang)
    with pytest.raises(ValueError, match="training"):
        CalvinDataset(root)
    ds = CalvinDataset(root / "training")
    assert ds.frame_ids == [100, 101, 102]
    assert ds.annotated_segments() == [(100, 102, "open_drawer", "open the drawer")]
    assert ds.load_frame(101)["robot_obs"].shape == (15,)
    # frames are never unpickled
    np.savez(root / "validation" / "episode_0000003.npz", actions=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        CalvinDataset(root / "validation").load_frame(3)


def test_writer_rejects_bad_input(tmp_path):
    w = CalvinEpisodeWriter(tmp_path / "d")
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError):
        w.add_frame(fake_obs(rng, 0), np.zeros(7))
    w.start_episode()
    with pytest.raises(ValueError, match="rgb_static"):
        w.add_frame({"robot_obs": np.zeros(15), "scene_obs": np.zeros(24)}, np.zeros(7))
    with pytest.raises(ValueError):
        w.add_frame(fake_obs(rng, 0), np.full(7, np.nan))
    w.add_frame(fake_obs(rng, 0), np.zeros(7))
    with pytest.raises(ValueError):
        w.annotate(0, 3, "open_drawer", "x")


def test_parallel_writers_are_indexed_by_one(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "training"
    workers = [CalvinEpisodeWriter(out, start_index=start) for start in (0, 1_000_000)]
    for worker, task in zip(workers, ("open_drawer", "turn_on_led"), strict=True):
        s = worker.start_episode()
        for t in range(3):
            worker.add_frame(fake_obs(rng, t), np.r_[0.1 * t, 0.0, 0.5, 3.1, 0.0, 1.5, 1.0])
        worker.annotate(s, worker.last_index, task, f"do {task}")
        worker.end_episode()
    merged = CalvinEpisodeWriter(out)
    for worker in workers:
        merged.include(worker)
    merged.close()
    ds = CalvinDataset(out)
    np.testing.assert_array_equal(ds.episodes(), [[0, 2], [1_000_000, 1_000_002]])
    assert ds.annotated_segments() == [(0, 2, "open_drawer", "do open_drawer"),
                                       (1_000_000, 1_000_002, "turn_on_led", "do turn_on_led")]
    with pytest.raises(ValueError, match="cannot include"):
        merged.include(CalvinEpisodeWriter(tmp_path / "elsewhere"))
