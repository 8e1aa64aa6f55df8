"""Object-array .npy files are unpickled with numpy-only globals (openhelix_core.data.safe_npy)."""

import builtins
import io
import os
import pickle
import subprocess

import numpy as np
import numpy.testing
import pytest

from openhelix_core.data import CalvinDataset, CalvinEpisodeWriter, UnsafePickleError, load_npy
from openhelix_core.data.calvin_format import LANG_FILE, LANG_FOLDER
from openhelix_core.data.safe_npy import NumpyOnlyUnpickler


class _Exploit:
    """Pickles as a call of ``function(*arguments)``, as a crafted dataset file would."""

    def __init__(self, function, *arguments):
        self.function = function
        self.arguments = arguments

    def __reduce__(self):
        return self.function, self.arguments


def _save_object_npy(path, value):
    """Write ``value`` the way np.save writes CALVIN's annotation dict: a 0-d object array."""
    holder = np.empty((), dtype=object)
    holder[()] = value
    np.save(path, holder, allow_pickle=True)


def _write_calvin_split(directory):
    rng = np.random.default_rng(0)
    obs = {"robot_obs": np.zeros(15), "scene_obs": np.zeros(24),
           "rgb_static": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
           "rgb_gripper": rng.integers(0, 255, (4, 4, 3), dtype=np.uint8),
           "depth_static": np.ones((8, 8), np.float32), "depth_gripper": np.ones((4, 4), np.float32)}
    with CalvinEpisodeWriter(directory, embedding_fn=lambda anns: np.arange(len(anns) * 3).reshape(-1, 3)) as writer:
        start = writer.start_episode()
        for _ in range(3):
            writer.add_frame(obs, np.zeros(7))
        writer.annotate(start, writer.last_index, "open_drawer", "open the drawer")
        writer.annotate(start + 1, writer.last_index, "turn_on_led", "press the button")


def test_writer_annotation_file_reads_back_equal(tmp_path):
    _write_calvin_split(tmp_path)
    path = tmp_path / LANG_FOLDER / LANG_FILE
    lang = load_npy(path).item()
    assert lang["language"]["ann"] == ["open the drawer", "press the button"]
    assert lang["language"]["task"] == ["open_drawer", "turn_on_led"]
    assert lang["info"] == {"indx": [(0, 2), (1, 2)], "episodes": []}
    assert lang["language"]["emb"].dtype == np.float32
    np.testing.assert_array_equal(lang["language"]["emb"], np.arange(6).reshape(2, 3))
    assert CalvinDataset(tmp_path).annotated_segments() == [(0, 2, "open_drawer", "open the drawer"),
                                                             (1, 2, "turn_on_led", "press the button")]


def test_nested_containers_arrays_and_numpy_scalars_round_trip(tmp_path):
    value = {
        "language": {"ann": ["a", "b"], "task": np.array(["open_drawer", "lift"]), "emb": np.ones((2, 4), np.float16)},
        "info": {"indx": [(0, 4), (5, 9)], "episodes": []},
        "scalars": (np.float64(1.5), np.int64(-3), np.bool_(True), 7, 2.5, None, False, b"raw", 1 + 2j),
        "sets": ({1, 2}, frozenset({"x"})),
        "types": [np.float32, np.uint8],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "objects": np.array([{"k": [1]}, None], dtype=object),
    }
    path = tmp_path / "nested.npy"
    _save_object_npy(path, value)
    loaded = load_npy(path).item()
    assert loaded["info"] == value["info"] and loaded["scalars"] == value["scalars"]
    assert loaded["sets"] == value["sets"] and loaded["types"] == value["types"]
    assert type(loaded["scalars"][0]) is np.float64 and type(loaded["scalars"][1]) is np.int64
    np.testing.assert_array_equal(loaded["language"]["task"], value["language"]["task"])
    assert loaded["language"]["emb"].dtype == np.float16
    np.testing.assert_array_equal(loaded["fortran"], value["fortran"])
    assert loaded["objects"][0] == {"k": [1]} and loaded["objects"][1] is None


def test_plain_arrays_are_read_without_pickle(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([[0, 4], [5, 9]]))
    np.testing.assert_array_equal(load_npy(tmp_path / "ids.npy"), [[0, 4], [5, 9]])


@pytest.mark.parametrize("function, forbidden", [
    (os.system, f"{os.system.__module__}.system"),
    (builtins.eval, "builtins.eval"),
    (subprocess.Popen, "subprocess.Popen"),
])
def test_code_running_globals_are_refused_and_never_called(tmp_path, function, forbidden):
    marker = tmp_path / "MARKER"
    command = f"touch {marker}"
    arguments = {os.system: (command,), builtins.eval: (f"open({str(marker)!r}, 'w')",),
                 subprocess.Popen: (["touch", str(marker)],)}[function]
    path = tmp_path / LANG_FOLDER / LANG_FILE
    path.parent.mkdir()
    _save_object_npy(path, {"language": {"ann": [_Exploit(function, *arguments)]}, "info": {}})
    with pytest.raises(UnsafePickleError) as refused:
        load_npy(path)
    assert f"'{forbidden}'" in str(refused.value) and str(path) in str(refused.value)
    np.savez(tmp_path / "episode_0000000.npz", actions=np.zeros(7))  # one frame, so that the split opens
    with pytest.raises(UnsafePickleError, match=forbidden.replace(".", r"\.")):
        CalvinDataset(tmp_path).language()
    assert not marker.exists()


@pytest.mark.parametrize("function", [np.load, numpy.testing.runstring, np.frombuffer])
def test_other_numpy_functions_are_refused(tmp_path, function):
    path = tmp_path / "numpy_call.npy"
    _save_object_npy(path, [_Exploit(function, "x")])
    with pytest.raises(UnsafePickleError, match=rf"'{function.__module__}\.{function.__name__}'"):
        load_npy(path)


def test_refusal_comes_before_any_import():
    stream = io.BytesIO(pickle.dumps(_Exploit(pickle.loads, b"")))
    with pytest.raises(UnsafePickleError, match=r"'_pickle\.loads'.*numpy"):
        NumpyOnlyUnpickler(stream, "in-memory").load()
    never_imported = pickle.PROTO + b"\x03" + b"cno_such_module_xyz\nf\n)R."
    with pytest.raises(UnsafePickleError, match="no_such_module_xyz.f"):
        NumpyOnlyUnpickler(io.BytesIO(never_imported), "in-memory").load()


def test_bad_files_name_the_cause(tmp_path):
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    with pytest.raises(ValueError, match="notes.npy is not a .npy file"):
        load_npy(text)
    truncated = tmp_path / "truncated.npy"
    _save_object_npy(truncated, {"ann": ["x" * 100]})
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated.npy: cannot unpickle"):
        load_npy(truncated)
    not_array = tmp_path / "not_array.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    not_array.write_bytes(header.getvalue() + pickle.dumps({"ann": []}, protocol=3))
    with pytest.raises(ValueError, match=r"header announces an array \(\) object but the pickle holds dict"):
        load_npy(not_array)
