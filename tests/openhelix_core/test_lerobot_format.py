"""LeRobotDataset v3.0 export / import of CALVIN splits (openhelix_core.data.lerobot_format)."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from openhelix_core.data import CalvinDataset, CalvinEpisodeWriter
from openhelix_core.data.calvin_format import EPISODE_IDS_FILE, LANG_FILE, LANG_FOLDER, episode_filename
from openhelix_core.data.lerobot_format import (
    ACTION_NAMES,
    CODEBASE_VERSION,
    ROBOT_OBS_NAMES,
    LeRobotFormatError,
    export_lerobot,
    import_lerobot,
    read_info,
)

CAMERA_INFO = {"static_fov": 10.0, "static_to_base": np.eye(4).tolist(), "gripper_fov": 75.0,
               "gripper_to_tcp": np.eye(4).tolist(), "source": "test rig"}


def fake_obs(rng, t):
    return {
        "robot_obs": np.r_[0.1 + 0.01 * t, 0.0, 0.5, 3.1, 0.0, 1.5, 0.08, rng.normal(size=7), 1.0],
        "scene_obs": rng.normal(size=24),
        "rgb_static": rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
        "rgb_gripper": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "depth_static": (rng.random((12, 16), dtype=np.float32) * 3.0).astype(np.float32),
        "depth_gripper": rng.random((8, 8), dtype=np.float32),
    }


def write_split(directory, lengths=(4, 3, 5), first_id=100, camera_info=True):
    """A CALVIN split: episodes of ``lengths`` frames from frame id ``first_id``, overlapping
    annotations, and a camera_info.json."""
    rng = np.random.default_rng(0)
    writer = CalvinEpisodeWriter(directory, start_index=first_id)
    for length in lengths:
        writer.start_episode()
        for t in range(length):
            obs = fake_obs(rng, t)
            writer.add_frame(obs, np.r_[obs["robot_obs"][:6] + 0.001, 1.0 if t % 2 else -1.0])
        writer.end_episode()
    (a0, a1), (b0, b1), (c0, c1) = writer.episodes[:3]
    writer.annotate(a0, a1, "open_drawer", "open the drawer")
    writer.annotate(b0, b1 - 1, "push_button", "press the button")
    writer.annotate(c0, min(c0 + 2, c1), "lift_block", "lift the red block")
    writer.annotate(min(c0 + 1, c1), c1, "open_drawer", "open the drawer")  # overlaps the one before
    writer.close()
    if camera_info:
        (directory / "camera_info.json").write_text(json.dumps(CAMERA_INFO, indent=2) + "\n")
    return writer


def assert_same_split(original, restored):
    a, b = CalvinDataset(original), CalvinDataset(restored)
    assert a.frame_ids == b.frame_ids
    np.testing.assert_array_equal(a.episodes(), b.episodes())
    assert a.annotated_segments() == b.annotated_segments()
    for frame_id in a.frame_ids:
        fa, fb = a.load_frame(frame_id), b.load_frame(frame_id)
        assert sorted(fa) == sorted(fb), frame_id
        for key in fa:
            assert fa[key].dtype == fb[key].dtype and fa[key].shape == fb[key].shape, key
            assert fa[key].tobytes() == fb[key].tobytes(), (frame_id, key)  # bit-exact


def test_round_trip_gives_back_the_split_exactly(tmp_path):
    split = tmp_path / "split"
    write_split(split)
    summary = export_lerobot(split, tmp_path / "lerobot", fps=30.0)
    assert (summary.episodes, summary.frames, summary.tasks) == (3, 12, 4)
    assert summary.unannotated_frames == 1 and summary.camera_info
    restored = import_lerobot(tmp_path / "lerobot", tmp_path / "restored")
    assert restored.restored_layout and restored.camera_info and restored.warnings == []
    assert (restored.episodes, restored.frames, restored.annotations) == (3, 12, 4)
    assert_same_split(split, tmp_path / "restored")
    assert (tmp_path / "restored" / "camera_info.json").read_bytes() == (split / "camera_info.json").read_bytes()


def test_episodes_longer_than_a_write_batch_round_trip(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(70, 2, 130))  # 64 frames per parquet write / read batch
    export_lerobot(split, tmp_path / "lerobot")
    assert pq.ParquetFile(tmp_path / "lerobot" / "data" / "chunk-000" / "file-000.parquet").num_row_groups > 3
    import_lerobot(tmp_path / "lerobot", tmp_path / "restored")
    assert_same_split(split, tmp_path / "restored")


def test_depth_is_stored_as_lossless_float_tiff_and_nan_survives(tmp_path):
    split = tmp_path / "split"
    rng = np.random.default_rng(1)
    with CalvinEpisodeWriter(split) as writer:
        writer.start_episode()
        obs = fake_obs(rng, 0)
        obs["depth_static"][0, 0] = np.nan
        obs["depth_static"][0, 1] = np.float32(1e-30)
        writer.add_frame(obs, np.r_[obs["robot_obs"][:6], 1.0])
    export_lerobot(split, tmp_path / "lerobot")
    table = pq.read_table(tmp_path / "lerobot" / "data" / "chunk-000" / "file-000.parquet")
    cell = table.column("observation.images.static_depth")[0].as_py()
    assert cell["path"] == "frame-000000.tiff"
    image = Image.open(io.BytesIO(cell["bytes"]))
    assert image.mode == "F"
    assert np.asarray(image).tobytes() == obs["depth_static"].tobytes()
    import_lerobot(tmp_path / "lerobot", tmp_path / "restored")
    assert_same_split(split, tmp_path / "restored")


def test_split_with_only_the_static_camera(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    rng = np.random.default_rng(2)
    for frame_id in range(3):  # as a converted bag writes them: no gripper camera, no scene_obs
        obs = fake_obs(rng, frame_id)
        np.savez_compressed(split / episode_filename(frame_id), actions=np.r_[obs["robot_obs"][:6], 1.0],
                            rel_actions=np.zeros(7), robot_obs=obs["robot_obs"],
                            rgb_static=obs["rgb_static"], depth_static=obs["depth_static"])
    np.save(split / EPISODE_IDS_FILE, np.array([[0, 2]]))
    summary = export_lerobot(split, tmp_path / "lerobot")
    assert set(summary.features) == {"actions", "rel_actions", "robot_obs", "rgb_static", "depth_static"}
    info = read_info(tmp_path / "lerobot")
    assert "observation.images.gripper" not in info["features"]
    assert "observation.images.gripper_depth" not in info["features"] and "calvin.scene_obs" not in info["features"]
    result = import_lerobot(tmp_path / "lerobot", tmp_path / "restored")
    assert set(result.mapping) == set(summary.features)
    assert_same_split(split, tmp_path / "restored")
    # No language file in the original: every frame has the empty task and none is annotated.
    assert CalvinDataset(tmp_path / "restored").annotated_segments() == []


def test_on_disk_layout_is_what_lerobot_reads(tmp_path):
    split = tmp_path / "split"
    write_split(split)
    root = tmp_path / "lerobot"
    export_lerobot(split, root, fps=30, robot_type="franka_panda", repo_id="someone/calvin_debug")
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == CODEBASE_VERSION == "v3.0"
    assert {k: info[k] for k in ("robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                                 "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "video_path")} == {
        "robot_type": "franka_panda", "total_episodes": 3, "total_frames": 12, "total_tasks": 4, "chunks_size": 1000,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": 30, "splits": {"train": "0:3"},
        "video_path": None}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    features = info["features"]
    assert list(features)[-5:] == ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    assert features["observation.state"] == {"dtype": "float64", "shape": [15], "names": list(ROBOT_OBS_NAMES)}
    assert features["action"] == {"dtype": "float64", "shape": [7], "names": list(ACTION_NAMES)}
    assert features["observation.images.static"] == {"dtype": "image", "shape": [12, 16, 3],
                                                     "names": ["height", "width", "channels"],
                                                     "info": {"is_depth_map": False}}
    assert features["observation.images.gripper_depth"]["shape"] == [8, 8, 1]
    assert features["observation.images.gripper_depth"]["info"] == {"is_depth_map": True, "depth_unit": "m"}
    assert features["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}

    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet")
    assert data.column_names == list(features)
    assert data.schema.field("observation.state").type == pa.list_(pa.float64(), 15)
    assert data.schema.field("observation.images.static").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert data.schema.field("timestamp").type == pa.float32()
    for name in ("frame_index", "episode_index", "index", "task_index"):
        assert data.schema.field(name).type == pa.int64()
    hf_features = json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf_features["observation.images.static"] == {"_type": "Image"}
    assert hf_features["action"] == {"feature": {"dtype": "float64", "_type": "Value"}, "length": 7, "_type": "List"}
    columns = data.to_pydict()
    assert columns["index"] == list(range(12))
    assert columns["episode_index"] == [0] * 4 + [1] * 3 + [2] * 5
    assert columns["frame_index"] == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    np.testing.assert_array_equal(columns["timestamp"], np.float32(np.array(columns["frame_index"]) / 30.0))
    png = columns["observation.images.static"][5]
    assert png["path"] == "frame-000001.png" and png["bytes"].startswith(b"\x89PNG")
    original = CalvinDataset(split).load_frame(105)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png["bytes"]))), original["rgb_static"])
    np.testing.assert_array_equal(columns["action"][5], original["actions"])

    tasks = pq.read_table(root / "meta" / "tasks.parquet").to_pydict()
    texts = dict(zip(tasks["task_index"], tasks["task"]))
    assert texts == {0: "open the drawer", 1: "press the button", 2: "", 3: "lift the red block"}
    # The task of each frame: the covering annotation that started last; "" where none covers it.
    assert [texts[i] for i in columns["task_index"]] == (["open the drawer"] * 4 + ["press the button"] * 2 + [""]
                                                         + ["lift the red block"] + ["open the drawer"] * 4)
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(root / "meta" / "tasks.parquet")
    assert frame.index.name == "task" and frame.loc["press the button"].task_index == 1  # lerobot's get_task_index

    episodes = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["episode_index"] == [0, 1, 2] and episodes["length"] == [4, 3, 5]
    assert episodes["dataset_from_index"] == [0, 4, 7] and episodes["dataset_to_index"] == [4, 7, 12]
    assert episodes["data/chunk_index"] == [0, 0, 0] and episodes["data/file_index"] == [0, 0, 0]
    assert episodes["tasks"][1] == ["press the button", ""]
    assert episodes["stats/index/min"] == [[0.0], [4.0], [7.0]]
    assert episodes["meta/episodes/chunk_index"] == [0, 0, 0]

    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert set(stats) == set(features)
    state = np.stack([CalvinDataset(split).load_frame(i)["robot_obs"] for i in range(100, 112)])
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(axis=0))
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["observation.state"]["min"], state.min(axis=0))
    assert stats["observation.state"]["count"] == [12]
    static = np.stack([CalvinDataset(split).load_frame(i)["rgb_static"] for i in range(100, 112)]) / 255.0
    assert np.shape(stats["observation.images.static"]["mean"]) == (3, 1, 1)
    np.testing.assert_allclose(np.ravel(stats["observation.images.static"]["mean"]), static.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(np.ravel(stats["observation.images.static"]["std"]), static.std(axis=(0, 1, 2)))
    assert stats["observation.images.static"]["count"] == [12]
    assert np.shape(stats["observation.images.static_depth"]["max"]) == (1, 1, 1)
    for key in ("q01", "q10", "q50", "q90", "q99"):
        assert np.shape(stats["action"][key]) == (7,)
    assert stats["index"]["max"] == [11.0] and stats["index"]["count"] == [12]

    assert json.loads((root / "meta" / "camera_info.json").read_text()) == CAMERA_INFO
    layout = json.loads((root / "meta" / "calvin_layout.json").read_text())
    assert layout["ep_start_end_ids"] == [[100, 103], [104, 106], [107, 111]]
    assert "someone/calvin_debug" in (root / "README.md").read_text()


def test_episodes_spread_over_data_files_past_the_size_limit(tmp_path):
    split = tmp_path / "split"
    write_split(split)
    summary = export_lerobot(split, tmp_path / "lerobot", data_files_size_in_mb=0.001)
    assert summary.data_files == 3
    episodes = pq.read_table(tmp_path / "lerobot" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pydict()
    assert episodes["data/file_index"] == [0, 1, 2]
    assert (tmp_path / "lerobot" / "data" / "chunk-000" / "file-002.parquet").is_file()
    import_lerobot(tmp_path / "lerobot", tmp_path / "restored")
    assert_same_split(split, tmp_path / "restored")


def test_refuses_a_v21_dataset_and_says_how_to_convert(tmp_path):
    meta = tmp_path / "old" / "meta"
    meta.mkdir(parents=True)
    (meta / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 30, "features": {}}))
    with pytest.raises(LeRobotFormatError, match=r"v2\.1.*convert_dataset_v21_to_v30"):
        import_lerobot(tmp_path / "old", tmp_path / "out")
    (meta / "info.json").write_text(json.dumps({"codebase_version": "banana", "fps": 30, "features": {}}))
    with pytest.raises(LeRobotFormatError, match="unknown codebase_version"):
        import_lerobot(tmp_path / "old", tmp_path / "out")
    with pytest.raises(LeRobotFormatError, match="info.json is missing"):
        import_lerobot(tmp_path, tmp_path / "out")


def test_mapping_to_a_missing_feature_lists_the_available_ones(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(2, 2, 2))
    export_lerobot(split, tmp_path / "lerobot")
    with pytest.raises(LeRobotFormatError) as error:
        import_lerobot(tmp_path / "lerobot", tmp_path / "out", cameras={"static": "observation.images.front"})
    message = str(error.value)
    assert "observation.images.front" in message
    assert "observation.images.static (image [12, 16, 3])" in message and "action (float64 [7])" in message
    with pytest.raises(LeRobotFormatError, match="--state-key observation.joints: no such feature"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out", state_key="observation.joints")
    with pytest.raises(LeRobotFormatError, match="unknown camera name"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out", cameras={"wrist": "observation.images.static"})
    # A feature of the wrong shape: CALVIN's robot_obs needs 15 numbers.
    with pytest.raises(LeRobotFormatError, match="robot_obs needs 15 numbers"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out", state_key="calvin.scene_obs")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_refuses_a_truncated_parquet_file(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(2, 2, 2))
    export_lerobot(split, tmp_path / "lerobot")
    path = tmp_path / "lerobot" / "data" / "chunk-000" / "file-000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LeRobotFormatError, match=r"file-000\.parquet is not a readable parquet file"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out")
    path.unlink()
    with pytest.raises(LeRobotFormatError, match=r"file-000\.parquet is missing"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out2")


def test_refuses_frames_that_disagree_with_the_declared_shape(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(2, 2, 2))
    export_lerobot(split, tmp_path / "lerobot")
    info_path = tmp_path / "lerobot" / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.images.static"]["shape"] = [24, 32, 3]
    info_path.write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"observation.images.static.*\[12, 16, 3\].*\[24, 32, 3\]"):
        import_lerobot(tmp_path / "lerobot", tmp_path / "out")


def test_export_refuses_a_non_empty_output_and_a_fractional_fps(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(2, 2, 2))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(LeRobotFormatError, match="not empty"):
        export_lerobot(split, tmp_path / "busy")
    with pytest.raises(LeRobotFormatError, match="whole number"):
        export_lerobot(split, tmp_path / "new", fps=29.97)
    with pytest.raises(LeRobotFormatError, match="cannot read the CALVIN split"):
        export_lerobot(tmp_path / "nowhere", tmp_path / "new")


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_foreign_dataset(root, fps=10, mm_depth=True):
    """A dataset as lerobot itself records one: float32 joints, a front camera, a uint16 mm depth
    camera, two episodes whose tasks change mid-episode; no openhelix metadata."""
    rng = np.random.default_rng(3)
    lengths, task_runs = (3, 4), ([0, 0, 1], [1, 1, 1, 0])
    image = {"bytes": pa.binary(), "path": pa.string()}
    features = {
        "observation.state": {"dtype": "float32", "shape": [15], "names": [f"j{i}" for i in range(15)]},
        "action": {"dtype": "float32", "shape": [7], "names": [f"a{i}" for i in range(7)]},
        "observation.images.front": {"dtype": "image", "shape": [6, 5, 3], "names": ["height", "width", "channels"]},
        "observation.images.front_depth": {"dtype": "image", "shape": [6, 5, 1], "names": ["height", "width", "channels"],
                                           "info": {"is_depth_map": True, "depth_unit": "mm"}},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    rows = {k: [] for k in features}
    for episode, length in enumerate(lengths):
        for frame in range(length):
            rows["observation.state"].append(rng.normal(size=15).astype(np.float32))
            rows["action"].append(np.r_[rng.normal(size=6), 1.0].astype(np.float32))
            rows["observation.images.front"].append({"bytes": _png(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)),
                                                     "path": f"frame-{frame:06d}.png"})
            depth = rng.integers(100, 5000, (6, 5), dtype=np.uint16)
            rows["observation.images.front_depth"].append({"bytes": _png(depth), "path": f"frame-{frame:06d}.png"})
            rows["timestamp"].append(np.float32(frame / fps))
            rows["frame_index"].append(frame)
            rows["episode_index"].append(episode)
            rows["index"].append(len(rows["index"]))
            rows["task_index"].append(task_runs[episode][frame])
    table = pa.table({
        "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(rows["observation.state"])), 15),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(rows["action"])), 7),
        "observation.images.front": pa.array(rows["observation.images.front"], type=pa.struct(image)),
        "observation.images.front_depth": pa.array(rows["observation.images.front_depth"], type=pa.struct(image)),
        "timestamp": pa.array(rows["timestamp"], type=pa.float32()),
        **{k: pa.array(rows[k], type=pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
    })
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(table, root / "data" / "chunk-000" / "file-000.parquet")
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table({"episode_index": [0, 1], "tasks": [["pick the cube", "place it"], ["place it", "pick the cube"]],
                             "length": list(lengths), "data/chunk_index": [0, 0], "data/file_index": [0, 0],
                             "dataset_from_index": [0, 3], "dataset_to_index": [3, 7]}),
                   root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": ["pick the cube", "place it"]}),
                   root / "meta" / "tasks.parquet")
    (root / "meta" / "info.json").write_text(json.dumps({
        "codebase_version": "v3.0", "robot_type": "so101_follower", "total_episodes": 2, "total_frames": 7,
        "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": fps, "splits": {"train": "0:2"}, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None, "features": features}))
    return table


def test_imports_a_lerobot_dataset_with_other_feature_names_through_the_mapping(tmp_path):
    root = tmp_path / "so101"
    table = write_foreign_dataset(root)
    with pytest.raises(LeRobotFormatError, match=r"no RGB camera mapped.*observation.images.front \(image"):
        import_lerobot(root, tmp_path / "out")
    summary = import_lerobot(root, tmp_path / "out",
                             cameras={"static": "observation.images.front", "static_depth": "observation.images.front_depth"})
    assert summary.mapping == {"rgb_static": "observation.images.front", "depth_static": "observation.images.front_depth",
                               "robot_obs": "observation.state", "actions": "action"}
    assert not summary.restored_layout and not summary.camera_info
    assert any("10 fps" in w for w in summary.warnings) and any("camera calibration" in w for w in summary.warnings)
    split = CalvinDataset(tmp_path / "out")
    assert split.frame_ids == list(range(7))
    np.testing.assert_array_equal(split.episodes(), [[0, 2], [3, 6]])
    # Consecutive frames with the same task become one annotation, the text as task and sentence.
    assert split.annotated_segments() == [(0, 1, "pick the cube", "pick the cube"), (2, 2, "place it", "place it"),
                                          (3, 5, "place it", "place it"), (6, 6, "pick the cube", "pick the cube")]
    frame = split.load_frame(4)
    state = np.asarray(table.column("observation.state")[4].as_py(), dtype=np.float32)
    assert frame["robot_obs"].dtype == np.float32 and frame["robot_obs"].tobytes() == state.tobytes()
    depth_png = table.column("observation.images.front_depth")[4].as_py()["bytes"]
    millimetres = np.asarray(Image.open(io.BytesIO(depth_png)))
    assert frame["depth_static"].dtype == np.float32
    np.testing.assert_allclose(frame["depth_static"], millimetres / 1000.0, rtol=1e-6)
    assert frame["rgb_static"].shape == (6, 5, 3) and "rgb_gripper" not in frame
    assert "scene_obs" not in frame   # no simulator state is made up
    assert np.all(np.abs(frame["rel_actions"]) <= 1.0)
    with pytest.raises(LeRobotFormatError, match="10 fps"):
        import_lerobot(root, tmp_path / "strict", cameras={"static": "observation.images.front"}, fps_check=True)


def test_refuses_a_video_feature_without_pyav(tmp_path, monkeypatch):
    import builtins

    root = tmp_path / "video"
    write_foreign_dataset(root)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.images.front"]["dtype"] = "video"
    info_path.write_text(json.dumps(info))
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("no av here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(LeRobotFormatError, match=r"\['observation.images.front'\] are stored as video.*pip install av"):
        import_lerobot(root, tmp_path / "out", cameras={"static": "observation.images.front"})


def test_import_refuses_an_output_that_already_holds_frames(tmp_path):
    split = tmp_path / "split"
    write_split(split, lengths=(2, 2, 2))
    export_lerobot(split, tmp_path / "lerobot")
    with pytest.raises(LeRobotFormatError, match="already holds a CALVIN split"):
        import_lerobot(tmp_path / "lerobot", split)
    assert (split / LANG_FOLDER / LANG_FILE).is_file()


def test_a_failed_import_or_export_leaves_nothing_behind(tmp_path):
    root = tmp_path / "so101"
    write_foreign_dataset(root)
    pq.write_table(pa.table({"task_index": [0], "task": ["pick the cube"]}), root / "meta" / "tasks.parquet")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("kept")
    # Every frame is written before the missing task is noticed; the frames are removed again.
    with pytest.raises(LeRobotFormatError, match=r"lacks task_index \[1\]"):
        import_lerobot(root, tmp_path / "out", cameras={"static": "observation.images.front"})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    with pytest.raises(LeRobotFormatError):
        import_lerobot(root, tmp_path / "new", cameras={"static": "observation.images.front"})
    assert not (tmp_path / "new").exists()

    split = tmp_path / "split"
    write_split(split)
    with np.load(split / episode_filename(109)) as data:
        frame = dict(data)
    frame["rgb_static"] = frame["rgb_static"][:6]  # a different image size in the last episode
    np.savez_compressed(split / episode_filename(109), **frame)
    with pytest.raises(LeRobotFormatError, match=r"frame 109: rgb_static is uint8 \(6, 16, 3\)"):
        export_lerobot(split, tmp_path / "lerobot")
    assert not (tmp_path / "lerobot").exists()


def test_imports_camera_frames_stored_as_video_with_pyav(tmp_path):
    av = pytest.importorskip("av")  # not installed in this project's venv; lerobot records with it
    root = tmp_path / "video"
    write_foreign_dataset(root, fps=10)
    levels = [30, 60, 90, 120, 150, 180, 210]  # one flat grey level per frame, 3 + 4 frames
    path = root / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
    path.parent.mkdir(parents=True)
    container = av.open(str(path), mode="w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
    for level in levels:
        frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), level, dtype=np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.images.front"] = {"dtype": "video", "shape": [32, 48, 3],
                                                    "names": ["height", "width", "channels"]}
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    info_path.write_text(json.dumps(info))
    episodes_path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    episodes = pq.read_table(episodes_path).to_pydict()
    prefix = "videos/observation.images.front/"
    episodes.update({prefix + "chunk_index": [0, 0], prefix + "file_index": [0, 0],
                     prefix + "from_timestamp": [0.0, 0.3], prefix + "to_timestamp": [0.3, 0.7]})
    pq.write_table(pa.table(episodes), episodes_path)

    import_lerobot(root, tmp_path / "out", cameras={"static": "observation.images.front"})
    split = CalvinDataset(tmp_path / "out")
    for frame_id, level in enumerate(levels):
        rgb = split.load_frame(frame_id)["rgb_static"]
        assert rgb.shape == (32, 48, 3) and abs(float(rgb.mean()) - level) < 4, (frame_id, rgb.mean())
