"""``openhelix dataset-export`` / ``dataset-import``: arguments, output, one-line refusals."""
import json

import numpy as np
import pytest

from openhelix_bringup.bag_commands import parse_camera_mapping
from openhelix_bringup.cli import main
from openhelix_core.data import CalvinDataset, CalvinEpisodeWriter


def write_split(directory):
    rng = np.random.default_rng(0)
    with CalvinEpisodeWriter(directory) as writer:
        for _ in range(2):
            writer.start_episode()
            for _ in range(3):
                obs = {"robot_obs": np.r_[rng.normal(size=6), 0.08, np.zeros(7), 1.0], "scene_obs": np.zeros(24),
                       "rgb_static": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                       "rgb_gripper": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
                       "depth_static": rng.random((8, 8), dtype=np.float32),
                       "depth_gripper": rng.random((4, 4), dtype=np.float32)}
                writer.add_frame(obs, np.r_[obs["robot_obs"][:6], 1.0])
            start, end = writer.end_episode()
            writer.annotate(start, end, "open_drawer", "open the drawer")


def test_export_then_import_through_the_cli(tmp_path, capsys):
    write_split(tmp_path / "split")
    assert main(["dataset-export", str(tmp_path / "split"), "--out", str(tmp_path / "lerobot"), "--fps", "15",
                 "--robot-type", "panda", "--repo-id", "me/demo"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, 6 frames, 1 tasks" in out and "rgb_static     -> observation.images.static" in out
    info = json.loads((tmp_path / "lerobot" / "meta" / "info.json").read_text())
    assert (info["fps"], info["robot_type"]) == (15, "panda")
    assert "me/demo" in (tmp_path / "lerobot" / "README.md").read_text()

    assert main(["dataset-import", str(tmp_path / "lerobot"), "--out", str(tmp_path / "back"),
                 "--camera", "static=observation.images.static", "--state-key", "observation.state",
                 "--action-key", "action"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, 6 frames, 2 annotations" in out and "warning: the dataset is recorded at 15 fps" in out
    assert CalvinDataset(tmp_path / "back").annotated_segments() == [(0, 2, "open_drawer", "open the drawer"),
                                                                      (3, 5, "open_drawer", "open the drawer")]
    # --fps-check turns the fps warning into a refusal: one line, exit code 2.
    assert main(["dataset-import", str(tmp_path / "lerobot"), "--out", str(tmp_path / "strict"), "--fps-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("openhelix: ") and "15 fps" in err and "\n" not in err


def test_refusals_print_one_line_and_exit_2(tmp_path, capsys):
    write_split(tmp_path / "split")
    assert main(["dataset-export", str(tmp_path / "split"), "--out", str(tmp_path / "lerobot")]) == 0
    capsys.readouterr()
    for argv, reason in (
        (["dataset-import", str(tmp_path / "lerobot"), "--out", str(tmp_path / "a"), "--camera", "static=nope"],
         "--camera static=nope: no such feature; the dataset's features are: observation.state"),
        (["dataset-import", str(tmp_path / "lerobot"), "--out", str(tmp_path / "b"), "--camera", "static"],
         "is not of the form NAME=FEATURE"),
        (["dataset-import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")], "no such dataset directory"),
        (["dataset-export", str(tmp_path / "split"), "--out", str(tmp_path / "lerobot")], "is not empty"),
        (["dataset-export", str(tmp_path / "split"), "--out", str(tmp_path / "d"), "--fps", "12.5"], "whole number"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("openhelix: ") and reason in err and "\n" not in err, err


def test_required_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dataset-import", "somewhere"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dataset-export"])


def test_parse_camera_mapping():
    assert parse_camera_mapping(["static=observation.images.front", "gripper=observation.images.wrist"],
                                "NAME=FEATURE") == {"static": "observation.images.front",
                                                    "gripper": "observation.images.wrist"}
    with pytest.raises(ValueError, match="twice"):
        parse_camera_mapping(["static=a", "static=b"], "NAME=FEATURE")
    with pytest.raises(ValueError, match="NAME=FEATURE"):
        parse_camera_mapping(["=a"], "NAME=FEATURE")
