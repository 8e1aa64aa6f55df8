"""CALVIN's on-disk dataset format: a writer and a reader (pure numpy).

Layout (mees/calvin; read by ``calvin_agent/datasets/disk_dataset.py`` and
``datasets/utils/episode_utils.py``; language file written by
``calvin_agent/utils/automatic_lang_annotator_mp.py``)::

    <split>/episode_0000000.npz ...   one file per frame, 7-digit zero-padded global index
    <split>/ep_start_end_ids.npy      (N, 2) int, inclusive [start, end] frame ids per episode
    <split>/lang_annotations/auto_lang_ann.npy
                                      pickled dict saved with np.save:
                                      {"language": {"ann": [str], "task": [str], "emb": array (M, D)},
                                       "info": {"indx": [(start, end)], "episodes": []}}

A real CALVIN download has ``training/`` and ``validation/`` split folders with these files
(plus ``scene_info.npy``, ``statistics.yaml``, ``lang_annotations/embeddings.npy``, which are
not needed here). ``info.indx`` ranges are inclusive like ``ep_start_end_ids``: the dataset
loaders iterate ``range(start, end + 1 - window)``.

Frame keys (``FRAME_KEYS``): ``actions`` (7,) absolute TCP xyz, Euler xyz, gripper (+-1);
``rel_actions`` (7,) in [-1, 1]; ``robot_obs`` (15,); ``scene_obs`` (24,); ``rgb_static``
(H, W, 3) uint8; ``rgb_gripper`` (h, w, 3) uint8; ``depth_static`` (H, W) float32;
``depth_gripper`` (h, w) float32. CALVIN's own data holds all of them; data converted from a
robot's bags (``openhelix bag-to-dataset``) has no ``scene_obs`` (no simulator state) and may
lack the gripper camera (``REQUIRED_OBS_KEYS`` are always there).

Relative actions follow ``to_relative_action`` in ``calvin_agent/utils/utils.py`` (mees/calvin):
``clip(action_xyz - tcp_xyz, +-0.02) / 0.02``, ``clip(wrap(action_euler - tcp_euler), +-0.05) /
0.05`` with the angle difference wrapped to [-pi, pi), and the gripper copied, where the TCP
pose is ``robot_obs[:6]`` of the frame the action is taken in.

Pickle: ``auto_lang_ann.npy`` holds a Python dict (a pickled object array), which is CALVIN's
own format. :class:`CalvinDataset` reads it with :func:`~openhelix_core.data.safe_npy.load_npy`,
whose unpickler resolves only the globals needed to rebuild numpy arrays and builtin
containers, so a crafted file is refused instead of running code. Every other file (``.npz``
frames, ``ep_start_end_ids.npy``) is loaded with ``allow_pickle=False``, so object arrays in
them are refused outright.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .safe_npy import load_npy

MAX_REL_POS = 0.02
MAX_REL_ORN = 0.05
N_DIGITS = 7
LANG_FOLDER = "lang_annotations"
LANG_FILE = "auto_lang_ann.npy"
EPISODE_IDS_FILE = "ep_start_end_ids.npy"
FRAME_KEYS = ("actions", "rel_actions", "robot_obs", "scene_obs", "rgb_static", "rgb_gripper", "depth_static",
              "depth_gripper")
#: Keys every frame holds; the gripper camera and ``scene_obs`` are optional (a real robot's
#: data has no simulator state and may have one camera).
REQUIRED_OBS_KEYS = ("robot_obs", "rgb_static", "depth_static")
_FRAME_RE = re.compile(r"^episode_(\d+)\.npz$")

#: CALVIN's frames are recorded, and its simulator is stepped, at this rate: one absolute action
#: per step. Policies trained on CALVIN-format data time their waypoints with it by default.
CALVIN_CONTROL_RATE_HZ = 30.0
CALVIN_CONTROL_PERIOD_S = 1.0 / CALVIN_CONTROL_RATE_HZ


def angle_between_angles(a, b) -> np.ndarray:
    """b - a wrapped to [-pi, pi)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    return (d + np.pi) % (2 * np.pi) - np.pi


def to_relative_action(action, robot_obs, max_pos: float = MAX_REL_POS, max_orn: float = MAX_REL_ORN) -> np.ndarray:
    """CALVIN's relative action for an absolute ``action`` (7,) taken at ``robot_obs`` (>= 6)."""
    action = np.asarray(action, dtype=np.float64)
    robot_obs = np.asarray(robot_obs, dtype=np.float64)
    if action.shape != (7,) or robot_obs.ndim != 1 or robot_obs.shape[0] < 6:
        raise ValueError(f"expected action (7,) and robot_obs (>=6,), got {action.shape} and {robot_obs.shape}")
    rel_pos = np.clip(action[:3] - robot_obs[:3], -max_pos, max_pos) / max_pos
    rel_orn = np.clip(angle_between_angles(robot_obs[3:6], action[3:6]), -max_orn, max_orn) / max_orn
    return np.concatenate([rel_pos, rel_orn, action[6:7]])


def episode_filename(index: int) -> str:
    return f"episode_{int(index):0{N_DIGITS}d}.npz"


class CalvinEpisodeWriter:
    """Write frames, episodes and language annotations in CALVIN's layout.

    Usage::

        w = CalvinEpisodeWriter(out_dir)
        w.start_episode()
        i0 = w.add_frame(obs, action)          # obs: env observation dict, action: absolute (7,)
        ...
        w.annotate(i0, w.last_index, "open_drawer", "pull the handle to open the drawer")
        w.end_episode()
        w.close()                               # writes ep_start_end_ids.npy and auto_lang_ann.npy

    Frame indices are global and continue across episodes (and after existing files in the
    directory when ``start_index`` is given). Writers working in parallel on one directory each
    take their own ``start_index``; one writer then takes in the others (:meth:`include`) and closes."""

    def __init__(self, directory, start_index: int = 0, embedding_fn=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next = int(start_index)
        self._episode_start: Optional[int] = None
        self.episodes: List[Tuple[int, int]] = []
        self.ann: List[str] = []
        self.tasks: List[str] = []
        self.indx: List[Tuple[int, int]] = []
        self._embedding_fn = embedding_fn
        self._closed = False
        self._frame_keys: Optional[Tuple[str, ...]] = None

    @property
    def last_index(self) -> int:
        return self._next - 1

    def start_episode(self) -> int:
        if self._episode_start is not None:
            raise RuntimeError("an episode is already open; call end_episode() first")
        self._episode_start = self._next
        return self._next

    def add_frame(self, obs: Dict[str, np.ndarray], action, rel_action=None) -> int:
        """Save one frame: ``obs`` seen when the absolute ``action`` was taken. ``rel_action``
        defaults to CALVIN's conversion.

        ``obs`` needs ``robot_obs`` and the static camera (``rgb_static``, ``depth_static``); the
        gripper camera (``rgb_gripper`` with ``depth_gripper``) and ``scene_obs`` (the simulator's
        object state, which a real robot does not have) are written when present. Every frame of
        one writer must hold the same keys, so that the split is uniform."""
        if self._episode_start is None:
            raise RuntimeError("call start_episode() before add_frame()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 7 finite values, got shape {action.shape}")
        missing = [k for k in REQUIRED_OBS_KEYS if k not in obs]
        if missing:
            raise ValueError(f"observation lacks {missing} (the static camera and robot_obs are needed)")
        if ("rgb_gripper" in obs) != ("depth_gripper" in obs):
            raise ValueError("the gripper camera needs both rgb_gripper and depth_gripper")
        robot_obs = np.asarray(obs["robot_obs"], dtype=np.float64)
        rel = to_relative_action(action, robot_obs) if rel_action is None else np.asarray(rel_action, dtype=np.float64)
        if rel.shape != (7,) or np.any(np.abs(rel) > 1.0 + 1e-9):
            raise ValueError("rel_action must have 7 values in [-1, 1]")
        frame = {"actions": action, "rel_actions": rel, "robot_obs": robot_obs}
        if "scene_obs" in obs:
            frame["scene_obs"] = np.asarray(obs["scene_obs"], dtype=np.float64)
        for key in ("rgb_static", "rgb_gripper"):
            if key in obs:
                frame[key] = np.asarray(obs[key], dtype=np.uint8)
        for key in ("depth_static", "depth_gripper"):
            if key in obs:
                frame[key] = np.asarray(obs[key], dtype=np.float32)
        keys = tuple(sorted(frame))
        if self._frame_keys is None:
            self._frame_keys = keys
        elif keys != self._frame_keys:
            raise ValueError(f"frame keys {list(keys)} differ from the split's {list(self._frame_keys)}")
        index = self._next
        np.savez_compressed(self.directory / episode_filename(index), **frame)
        self._next += 1
        return index

    def end_episode(self) -> Tuple[int, int]:
        if self._episode_start is None:
            raise RuntimeError("no open episode")
        if self._next == self._episode_start:
            raise RuntimeError("an episode needs at least one frame")
        ep = (self._episode_start, self._next - 1)
        self.episodes.append(ep)
        self._episode_start = None
        return ep

    def annotate(self, start: int, end: int, task: str, annotation: str) -> None:
        """Label the inclusive frame range [start, end] with a task and its sentence."""
        start, end = int(start), int(end)
        if not (0 <= start <= end <= self.last_index):
            raise ValueError(f"annotation range ({start}, {end}) is outside the written frames")
        self.indx.append((start, end))
        self.tasks.append(str(task))
        self.ann.append(str(annotation))

    def include(self, other: CalvinEpisodeWriter) -> None:
        """Index the episodes and annotations ``other`` wrote into this directory too, so that
        :meth:`close` lists them (frames from parallel writers, e.g. worker processes)."""
        if Path(other.directory).resolve() != self.directory.resolve():
            raise ValueError(f"cannot include episodes written to {other.directory} in {self.directory}")
        self.episodes += other.episodes
        self.indx += other.indx
        self.tasks += other.tasks
        self.ann += other.ann

    def close(self) -> None:
        if self._closed:
            return
        if self._episode_start is not None:
            self.end_episode()
        ids = np.array(self.episodes, dtype=np.int64).reshape(-1, 2)
        np.save(self.directory / EPISODE_IDS_FILE, ids)
        lang = {
            "language": {"ann": list(self.ann), "task": list(self.tasks)},
            "info": {"indx": list(self.indx), "episodes": []},
        }
        if self._embedding_fn is not None:
            lang["language"]["emb"] = np.asarray(self._embedding_fn(self.ann), dtype=np.float32)
        (self.directory / LANG_FOLDER).mkdir(exist_ok=True)
        np.save(self.directory / LANG_FOLDER / LANG_FILE, lang, allow_pickle=True)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CalvinDataset:
    """Read one CALVIN split folder (``training/``, ``validation/`` or a writer's directory).

    Passing a dataset root that has ``training/`` / ``validation/`` but no frames raises a
    ValueError naming the split folders to choose from."""

    def __init__(self, directory):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no such dataset directory: {self.directory}")
        self.frame_ids = self._scan_frames()
        if not self.frame_ids:
            splits = [d for d in ("training", "validation") if (self.directory / d).is_dir()]
            hint = f"; use one of the split folders {splits}" if splits else ""
            raise ValueError(f"{self.directory} contains no episode_*.npz frames{hint}")
        self._n_digits = self._digits
        self._lang: Optional[dict] = None

    def _scan_frames(self) -> List[int]:
        ids = []
        digits = None
        with os.scandir(self.directory) as it:
            for entry in it:
                m = _FRAME_RE.match(entry.name)
                if m:
                    ids.append(int(m.group(1)))
                    digits = len(m.group(1))
        self._digits = digits or N_DIGITS
        return sorted(ids)

    # ----------------------------------------------------------- episodes
    def episodes(self) -> np.ndarray:
        """(N, 2) inclusive frame ranges from ep_start_end_ids.npy (one range over all frames
        when the file is missing)."""
        path = self.directory / EPISODE_IDS_FILE
        if not path.exists():
            return np.array([[self.frame_ids[0], self.frame_ids[-1]]], dtype=np.int64)
        ids = np.load(path, allow_pickle=False)
        return np.asarray(ids, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def frame_path(self, index: int) -> Path:
        return self.directory / f"episode_{int(index):0{self._n_digits}d}.npz"

    def load_frame(self, index: int, keys: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
        """All arrays of frame ``index`` (global id), or only ``keys``."""
        path = self.frame_path(index)
        if not path.exists():
            raise IndexError(f"frame {index} not found ({path.name})")
        with np.load(path, allow_pickle=False) as data:
            names = data.files if keys is None else list(keys)
            absent = [k for k in names if k not in data.files]
            if absent:
                raise KeyError(f"frame {index} ({path.name}) has no {absent}; it holds {sorted(data.files)}")
            return {k: data[k] for k in names}

    def load_range(self, start: int, end: int, keys: Sequence[str] = ("actions", "rel_actions", "robot_obs",
                                                                          "scene_obs")) -> Dict[str, np.ndarray]:
        """Stack ``keys`` over the inclusive frame range [start, end]."""
        frames = [self.load_frame(i, keys) for i in range(int(start), int(end) + 1)]
        return {k: np.stack([f[k] for f in frames]) for k in keys}

    # ----------------------------------------------------------- language
    def language(self) -> Optional[dict]:
        """The annotation dict of lang_annotations/auto_lang_ann.npy (None when absent). This is
        the only file whose pickle is read, with numpy-only globals (see the module doc).

        Raises:
            UnsafePickleError: the file's pickle names a global that could run code.
            ValueError: the file is not CALVIN's annotation dict."""
        if self._lang is None:
            path = self.directory / LANG_FOLDER / LANG_FILE
            if not path.exists():
                return None
            obj = load_npy(path)
            lang = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj
            if not isinstance(lang, dict) or "language" not in lang or "info" not in lang:
                raise ValueError(f"{path} is not a CALVIN language annotation dict")
            self._lang = lang
        return self._lang

    def annotated_segments(self) -> List[Tuple[int, int, str, str]]:
        """(start, end, task, annotation) per annotation; ranges are inclusive."""
        lang = self.language()
        if lang is None:
            return []
        indx = lang["info"]["indx"]
        tasks = lang["language"].get("task", [""] * len(indx))
        anns = lang["language"]["ann"]
        if not (len(indx) == len(anns) == len(tasks)):
            raise ValueError("auto_lang_ann.npy: indx, ann and task lengths differ")
        return [(int(s), int(e), str(t), str(a)) for (s, e), t, a in zip(indx, tasks, anns)]

    def embeddings(self) -> Optional[np.ndarray]:
        lang = self.language()
        if lang is None:
            return None
        emb = lang["language"].get("emb")
        return None if emb is None or len(emb) == 0 else np.asarray(emb)
