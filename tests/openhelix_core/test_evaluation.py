"""CALVIN evaluation protocol: sequences, metrics and reports (openhelix_core.evaluation)."""

import json

import numpy as np
import pytest

from openhelix_core.evaluation import metrics, report, sequences
from openhelix_core.evaluation.metrics import EvaluationSummary, SequenceResult, TaskStats

# Entries 0, 1, 2 and 999 of CALVIN's get_sequences(1000) (mees/calvin multistep_sequences.py),
# as found in a published dump of its output (starVLA/starVLA examples/calvin/eval_files/eval_sequences.json).
CALVIN_REFERENCE = {
    0: ((1, 1, "left", "open", "slider_left", "table", "slider_right", 0),
        ("rotate_blue_block_right", "move_slider_right", "lift_red_block_slider", "place_in_slider",
         "turn_off_lightbulb")),
    1: ((1, 1, "right", "open", "slider_right", "table", "slider_left", 0),
        ("turn_off_led", "push_into_drawer", "lift_blue_block_drawer", "place_in_slider", "close_drawer")),
    2: ((0, 1, "right", "closed", "table", "slider_right", "slider_left", 0),
        ("lift_pink_block_slider", "place_in_slider", "open_drawer", "rotate_red_block_right", "lift_red_block_table")),
    999: ((1, 0, "left", "closed", "slider_right", "slider_left", "table", 0),
          ("move_slider_right", "turn_on_lightbulb", "push_pink_block_left", "open_drawer", "push_into_drawer")),
}


# ------------------------------------------------------------------------------- sequences
def test_task_table_shape_and_order():
    assert len(sequences.TASK_NAMES) == 34
    assert sequences.TASK_NAMES[:2] == ("rotate_red_block_right", "rotate_red_block_left")
    assert sequences.TASK_NAMES[12:16] == ("move_slider_left", "move_slider_right", "open_drawer", "close_drawer")
    assert sequences.TASK_NAMES[-1] == "push_into_drawer"
    assert set(sequences.TASK_CATEGORIES) == set(sequences.TASK_NAMES)
    assert sequences.TASK_CATEGORIES["turn_on_led"] == sequences.TASK_CATEGORIES["turn_off_lightbulb"]
    assert len(sequences.TASKS["place_in_slider"]) == 6 and len(sequences.TASKS["stack_block"]) == 6


def test_initial_state_distribution():
    states = sequences.initial_states()
    assert len(states) == 192
    assert len({tuple(s.values()) for s in states}) == 192
    for s in states:
        assert list(s) == list(sequences.STATE_KEYS) and s["grasped"] == 0
        blocks = [s[b] for b in sequences.BLOCKS]
        assert blocks.count("table") in (1, 2)
        assert blocks.count("slider_left") <= 1 and blocks.count("slider_right") <= 1


def _walk(state, chain):
    """Independent check of a chain: each task has exactly one applicable rule in turn."""
    cur = dict(state)
    for name in chain:
        hits = [r for r in sequences.TASKS[name] if all(
            (cur[k] in v) if isinstance(v, tuple) else cur[k] == v for k, v in r.condition.items())]
        assert len(hits) == 1, (name, cur)
        cur = {**cur, **hits[0].effect}
    return cur


def test_sequences_deterministic_and_valid():
    a = sequences.get_sequences(60)
    b = sequences.get_sequences(60, seed=0)
    assert a == b and len(a) == 60
    c = sequences.get_sequences(60, seed=3)
    assert [x[1] for x in c] != [x[1] for x in a]
    for state, chain in a + c:
        assert len(chain) == 5 and len(set(chain)) == 5
        cats = [sequences.TASK_CATEGORIES[t] for t in chain]
        assert len(set(cats)) == 5
        _walk(state, chain)
        assert sequences.is_valid_chain(state, chain)
    # 60 < 192: each of the first 60 initial states is used exactly once
    used = sorted(tuple(s.values()) for s, _ in a)
    assert used == sorted(tuple(s.values()) for s in sequences.initial_states()[:60])
    # fresh dicts per call (callers may mutate them)
    a[0][0]["led"] = "mutated"
    assert sequences.get_sequences(60)[0][0]["led"] in (0, 1)


def test_sequence_at_agrees_with_get_sequences():
    full = sequences.get_sequences(60, seed=2)
    for i in (0, 17, 59):
        assert sequences.sequence_at(i, 60, seed=2) == full[i]
    with pytest.raises(IndexError):
        sequences.sequence_at(60, 60)


def test_matches_calvin_reference_sequences():
    for index, (values, chain) in CALVIN_REFERENCE.items():
        state, got = sequences.sequence_at(index, 1000, seed=0)
        assert tuple(state.values()) == values
        assert got == chain


def test_sequence_argument_checks():
    assert sequences.get_sequences(0) == []
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError):
            sequences.get_sequences(bad)
    with pytest.raises(ValueError):
        sequences.get_sequences(5, seed=-1)


def test_state_hash_matches_pyhash():
    # pyhash's own test vectors (flier/pyfasthash tests/test_fnv1.py): fnv1_32 of b"test" and u"test"
    assert sequences.fnv1_32(b"test") == 3698262380
    assert sequences.fnv1_32(b"test", 3698262380) == 660137056
    assert sequences.fnv1_32("test".encode("utf-16-le")) == 3910690890
    state = sequences.initial_states()[5]
    text = str(state.values())  # what CALVIN hashes
    assert sequences.initial_state_seed(state) == sequences.fnv1_32(text.encode("utf-16-le"))
    # numpy scalars and key order do not change the seed
    shuffled = {k: (np.int64(v) if isinstance(v, int) else v) for k, v in reversed(list(state.items()))}
    assert sequences.initial_state_seed(shuffled) == sequences.initial_state_seed(state)


def test_env_state_for_initial_state():
    state = {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
             "blue_block": "table", "pink_block": "table", "grasped": 0}
    robot_obs, scene_obs = sequences.env_state_for_initial_state(state)
    assert robot_obs.shape == (15,) and scene_obs.shape == (24,)
    np.testing.assert_allclose(robot_obs[:3], [0.02586889, -0.2313129, 0.5712808])
    assert robot_obs[14] == 1.0
    assert scene_obs[0] == pytest.approx(0.28) and scene_obs[1] == pytest.approx(0.22)
    assert scene_obs[2] == 0.0 and scene_obs[3] == pytest.approx(0.088)
    assert scene_obs[4] == 1 and scene_obs[5] == 1
    np.testing.assert_allclose(scene_obs[6:9], sequences.BLOCK_POS_SLIDER_LEFT)
    table = {tuple(np.round(x, 6)) for x in sequences.BLOCK_POS_TABLE}
    assert {tuple(np.round(scene_obs[12:15], 6)), tuple(np.round(scene_obs[18:21], 6))} == table
    for k in (11, 17, 23):
        assert sequences.BLOCK_YAW_RANGE[0] <= scene_obs[k] <= sequences.BLOCK_YAW_RANGE[1]
    for k in (9, 10, 15, 16, 21, 22):
        assert scene_obs[k] == 0.0
    r2, s2 = sequences.env_state_for_initial_state(dict(state))
    np.testing.assert_array_equal(s2, scene_obs)
    off = dict(state, lightbulb=0, slider="right", drawer="closed")
    _, s3 = sequences.env_state_for_initial_state(off)
    assert s3[0] == 0 and s3[1] == 0 and s3[3] == 0 and s3[4] == 0
    with pytest.raises(ValueError):
        sequences.env_state_for_initial_state(dict(state, red_block="drawer"))
    with pytest.raises(ValueError):
        sequences.env_state_for_initial_state({"led": 0})


# --------------------------------------------------------------------------------- metrics
def test_count_success_and_average_length():
    assert metrics.count_success([5, 3, 0, 1]) == [0.75, 0.5, 0.5, 0.25, 0.25]
    assert metrics.average_length([5, 3, 0, 1]) == 2.25
    assert metrics.count_success([]) == [0.0] * 5 and metrics.average_length([]) == 0.0
    for bad in ([6], [-1], [1.5], [True]):
        with pytest.raises(ValueError):
            metrics.count_success(bad)


def _hand_made_results():
    t = ("open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "place_in_drawer")
    u = ("turn_on_led", "close_drawer", "push_red_block_left", "move_slider_right", "lift_blue_block_slider")
    s = sequences.initial_states()[0]
    return [SequenceResult(s, t, 5), SequenceResult(s, u, 3), SequenceResult(s, t, 0), SequenceResult(s, u, 1)]


def test_task_statistics_and_summary():
    res = _hand_made_results()
    stats = metrics.task_statistics(res)
    assert stats["open_drawer"] == TaskStats(attempts=2, successes=1)
    assert stats["turn_on_led"] == TaskStats(attempts=3, successes=3)
    assert stats["close_drawer"] == TaskStats(attempts=2, successes=1)
    assert stats["push_red_block_left"] == TaskStats(attempts=1, successes=1)
    assert stats["move_slider_right"] == TaskStats(attempts=1, successes=0)
    assert "lift_blue_block_slider" not in stats  # never reached
    assert stats["place_in_drawer"].success_rate == 1.0
    summary = EvaluationSummary.from_results(res)
    assert summary.success_rates == [0.75, 0.5, 0.5, 0.25, 0.25]
    assert summary.average_length == 2.25 and summary.num_sequences == 4
    d = summary.to_dict()
    assert d["chain_sr"]["1"] == 0.75 and d["task_info"]["open_drawer"] == {"success": 1, "total": 2}
    assert EvaluationSummary.from_dict(json.loads(json.dumps(d))) == summary
    for r in res:
        assert SequenceResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    with pytest.raises(ValueError):
        SequenceResult({}, ("a", "b"), 3)


# ---------------------------------------------------------------------------------- report
def test_report_files(tmp_path):
    pytest.importorskip("matplotlib")
    res = _hand_made_results()
    paths = report.write_report(tmp_path / "out", res, config={"policy": "test", "seed": np.int64(0),
                                                                "title": "unit test"})
    for key in ("json", "markdown", "text", "plot"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config, loaded, summary = report.load_results_json(paths["json"])
    assert config["policy"] == "test" and config["seed"] == 0
    assert loaded == res and summary.average_length == 2.25
    md = paths["markdown"].read_text()
    assert "| open_drawer | 1 | 2 | 50.0% |" in md and "75.0%" in md
    txt = paths["text"].read_text()
    assert "turn_on_led" in txt and "100.0%" in txt
    # a summary without per-task records still plots
    empty = report.plot_summary(tmp_path / "e.png", EvaluationSummary.from_lengths([0, 2]))
    assert empty.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        report.format_task_table(EvaluationSummary.from_lengths([1]), style="html")
