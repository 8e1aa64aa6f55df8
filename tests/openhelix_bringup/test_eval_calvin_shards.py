"""eval-calvin --shard I/N and eval-calvin-merge: the split covers every sequence once, and the
merge rebuilds a single run's report or refuses shards that do not belong together."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openhelix_bringup import cli
from openhelix_core.evaluation.metrics import SequenceResult
from openhelix_core.evaluation.report import write_report
from openhelix_ros.launching import LaunchError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("total,shards,workers", [(1000, 8, 3), (10, 3, 2), (7, 7, 1), (5, 2, 4)])
def test_shards_and_their_workers_partition_the_sequences(total, shards, workers):
    seen = []
    for shard in range(shards):
        mine = []
        for worker in range(workers):
            stride, offset = cli.bridge_stride(shard, shards, worker, workers)
            mine += [i for i in range(total) if i % stride == offset]  # the sim bridge's selection
        assert sorted(mine) == cli.shard_indices(total, shard, shards)
        seen += mine
    assert sorted(seen) == list(range(total))


def test_shard_argument():
    assert cli.parse_shard("3/10") == (3, 10)
    for bad in ("10/10", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="I/N"):
            cli.parse_shard(bad)


def write_run(directory: Path, indices, total=6, shard=None, seed=0, checkpoint="(parameter files)",
              checkpoint_sha256=None):
    results = [SequenceResult(initial_state={}, tasks=("open_drawer", "turn_on_led", "move_slider_left",
                                                     "turn_off_led", "close_drawer"),
                              completed=i % 6, info={"sequence_index": i}) for i in indices]
    config = {"sequences": total, "workers": 1, "seed": seed, "protocol": "calvin", "checkpoint": checkpoint,
              "checkpoint_sha256": checkpoint_sha256}
    if shard is not None:
        config["shard"] = {"index": shard[0], "count": shard[1]}
    write_report(directory, results, config, plot=False)
    return directory


def test_merge_gives_the_single_run_report(tmp_path, capsys):
    single = json.loads((write_run(tmp_path / "single", range(6)) / "calvin_eval.json").read_text())
    shards = [str(write_run(tmp_path / f"s{k}", range(k, 6, 3), shard=(k, 3))) for k in (2, 0, 1)]
    assert cli.main(["eval-calvin-merge", *shards, "--output", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "calvin_eval.json").read_text())
    assert merged["summary"] == single["summary"]
    assert merged["sequences"] == single["sequences"]
    assert "average length 2.50" in capsys.readouterr().out


def test_shards_of_one_checkpoint_at_different_paths_merge_by_its_contents(tmp_path):
    checkpoints = []
    for name, weights in (("machine_a", b"w1"), ("machine_b", b"w1"), ("retrained", b"w2")):
        (tmp_path / name / "system1").mkdir(parents=True)
        (tmp_path / name / "system1" / "model.safetensors").write_bytes(weights)
        checkpoints.append(tmp_path / name)
    same, _, other = (cli.checkpoint_digest(c) for c in checkpoints)
    assert same == cli.checkpoint_digest(checkpoints[1]) and same != other
    a = write_run(tmp_path / "a", [0, 2, 4], shard=(0, 2), checkpoint=str(checkpoints[0]), checkpoint_sha256=same)
    b = write_run(tmp_path / "b", [1, 3, 5], shard=(1, 2), checkpoint=str(checkpoints[1]), checkpoint_sha256=same)
    assert len(cli.merge_shards([a, b])[0]) == 6
    c = write_run(tmp_path / "c", [1, 3, 5], shard=(1, 2), checkpoint=str(checkpoints[0]), checkpoint_sha256=other)
    with pytest.raises(LaunchError, match="different checkpoint_sha256"):
        cli.merge_shards([a, c])


@pytest.mark.parametrize("case,message", [
    ("missing", r"shards \[1\] of 3 are missing"),
    ("overlap", "are both shard 0/3"),
    ("seed", "different seed: 1 and 0"),
    ("checkpoint", "different checkpoint"),
    ("split", "not the same split"),
    ("incomplete", r"1 of its 3 sequences, missing \[2, 4\]"),
])
def test_merge_refuses_shards_that_do_not_belong_together(tmp_path, capsys, case, message):
    dirs = [write_run(tmp_path / "a", [0, 3], shard=(0, 3)), write_run(tmp_path / "c", [2, 5], shard=(2, 3))]
    extra = {"missing": None,
             "overlap": lambda d: write_run(d, [0, 3], shard=(0, 3)),
             "seed": lambda d: write_run(d, [1, 4], shard=(1, 3), seed=1),
             "checkpoint": lambda d: write_run(d, [1, 4], shard=(1, 3), checkpoint="runs/x"),
             "split": lambda d: write_run(d, [1, 3, 5], shard=(1, 2)),
             "incomplete": None}[case]
    if extra is not None:
        dirs.append(extra(tmp_path / "b"))
    if case == "incomplete":
        dirs = [write_run(tmp_path / "a", [0], shard=(0, 2)), write_run(tmp_path / "b", [1, 3, 5], shard=(1, 2))]
    with pytest.raises(LaunchError, match=message):
        cli.merge_shards(dirs)
    assert cli.main(["eval-calvin-merge", *map(str, dirs), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("openhelix: ")


@pytest.mark.integration
def test_a_crashed_sim_bridge_is_reported_with_its_traceback_and_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "openhelix_bringup.cli", "eval-calvin", "--protocol", "tasks", "--tasks", "fly_away",
         "--episodes-per-task", "1", "--output", str(tmp_path), "--timeout", "300"],
        capture_output=True, text=True, env={**os.environ}, timeout=400, cwd=REPO)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: worker 0: node 'sim_bridge' exited with code 1" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "unknown or unscripted task(s) ['fly_away']" in result.stderr
