"""LeRobotDataset v3.0 interchange for CALVIN-layout splits: :func:`export_lerobot` and
:func:`import_lerobot` (numpy, pyarrow and Pillow; no torch, no ROS, no ``lerobot`` package).

The ``lerobot`` package cannot be installed next to this project's CPU torch (it pins
``torch<2.11`` and a plain ``torchvision``, which pull the CUDA build), so the on-disk format is
written and read here directly. The facts below were read from huggingface/lerobot at 0.6.2
(``main``) and checked against the v0.4.4 tag: ``src/lerobot/datasets/utils.py`` (paths, chunk
and file sizes, ``DatasetInfo``), ``dataset_metadata.py`` (``CODEBASE_VERSION``, tasks and
episode metadata), ``dataset_writer.py`` and ``io_utils.py`` (data parquet, image embedding),
``feature_utils.py`` (feature -> ``datasets`` type), ``compute_stats.py`` (statistics),
``utils/constants.py`` (``DEFAULT_FEATURES``), ``utils/feature_utils.py`` (camera and depth
features), ``docs/source/lerobot-dataset-v3.mdx`` and ``video_encoding_parameters.mdx``.

Layout (``codebase_version`` ``"v3.0"``; many episodes per file, episodes located by metadata)::

    meta/info.json        codebase_version, robot_type, total_episodes, total_frames, total_tasks,
                          chunks_size (1000 files per chunk folder), data_files_size_in_mb (100),
                          video_files_size_in_mb (200), fps (int), splits {"train": "0:N"},
                          data_path "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                          video_path ("videos/{video_key}/chunk-...mp4", null without videos),
                          features {key: {dtype, shape, names[, info]}}
    meta/stats.json       {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/tasks.parquet    one row per task: task_index (int64) and the task text as the pandas
                          index named "task" (a column "task" plus pandas metadata)
    meta/episodes/chunk-000/file-000.parquet
                          one row per episode: episode_index, tasks (list of text), length,
                          data/chunk_index, data/file_index, dataset_from_index, dataset_to_index
                          (global ``index`` range, end exclusive), stats/<feature>/<stat> (that
                          episode's statistics), meta/episodes/chunk_index, meta/episodes/file_index
    data/chunk-XXX/file-XXX.parquet
                          one row per frame, the features in info.json order: the dataset's own
                          features, then timestamp (float32, frame_index / fps), frame_index,
                          episode_index, index (global, from 0), task_index (all int64)

Parquet column types follow the ``datasets`` features lerobot declares: shape ``(1,)`` -> a scalar
column, ``(n,)`` -> ``fixed_size_list<dtype>[n]``, ``(h, w)`` -> nested lists (``Array2D``), dtype
``"image"`` -> ``struct<bytes: binary, path: string>`` holding the encoded file (PNG for RGB, the
file's base name in ``path``), dtype ``"video"`` -> no column (frames live in the MP4 files at
``videos/<key>/from_timestamp + timestamp``). The schema carries ``datasets``' own
``b"huggingface"`` metadata so ``datasets`` rebuilds the ``Image`` features without being told.

Statistics (``compute_stats.py``): per episode, numeric features over the frame axis (``(n,)``
features give ``(n,)`` vectors, scalars ``(1,)``), images per channel over a sample of frames
(``estimate_num_samples``/``sample_indices``: every frame up to 100, then ``len ** 0.75`` capped
at 10 000, evenly spaced; images at least 300 px on a side strided down to about 150) with shape
``(c, 1, 1)``, RGB divided by 255, depth in its stored unit; ``count`` is frames (images: sampled
frames). Episodes are combined as ``aggregate_stats`` does: min of mins, max of maxes,
count-weighted mean, pooled variance, the lower quantiles (<= q50) the min and the upper ones the
max over episodes. Quantiles here are exact per episode (lerobot estimates them from 5000-bin
histograms); depth quantiles use every 4th pixel of every 4th row of the sampled frames. Image
``std`` is the true one, as lerobot >= 0.6 computes it (0.4 and 0.5 squared uint8 pixels without
widening them, which wraps around and gives too small a ``std``).

Checked against lerobot 0.4.4 itself (a throwaway venv, not this project's): its
``LeRobotDataset`` loads an export (float32 tensors, ``(1, H, W)`` depth, ``delta_timestamps``,
tasks), and datasets that it recorded, with a video camera (AV1, decoded here with PyAV) and with
image cameras, import; min / max / mean / count of the statistics agree with lerobot's.

Mapping of a CALVIN frame (see :mod:`.calvin_format`)::

    rgb_static    (H, W, 3) uint8    observation.images.static         image, PNG
    rgb_gripper   (h, w, 3) uint8    observation.images.gripper        image, PNG
    depth_static  (H, W) float32 m   observation.images.static_depth   image [H, W, 1], TIFF
    depth_gripper (h, w) float32 m   observation.images.gripper_depth  image [h, w, 1], TIFF
    robot_obs     (15,)              observation.state                 names: ROBOT_OBS_NAMES
    actions       (7,) absolute      action                            names: ACTION_NAMES
    rel_actions   (7,)               calvin.rel_actions
    scene_obs     (24,)              calvin.scene_obs

Depth is lerobot's own depth-image form (``hw_to_dataset_features``: a single-channel camera of
shape ``[H, W, 1]`` with ``info.is_depth_map``; ``image_writer.py`` stores float32 metres as an
uncompressed 32-bit float TIFF, ``depth_unit`` "m"), so it is bit-exact. lerobot's video form of
depth is a 12-bit quantization, and a float32 ``[H, W]`` numeric feature would get per-pixel
statistics. Numeric features keep the dtype the frames have (CALVIN's writer stores float64);
lerobot turns them into float32 tensors when it reads them. ``rel_actions`` and ``scene_obs`` are
not under ``observation.`` / ``action``: lerobot's policies take every ``observation.*`` key as an
input and ``action*`` as an output, and neither simulator ground truth nor a second action
should slip in unnoticed.

Language: a frame's ``task`` is the sentence (``ann``) of the annotation covering it; where
annotations overlap (CALVIN's windows do) the one that started last wins, and frames no
annotation covers get the empty task ``""``. Everything a lerobot dataset cannot hold comes along
in ``meta/``, which lerobot downloads and keeps: ``meta/calvin_layout.json`` (the original
``ep_start_end_ids`` and every annotation, ``task`` and ``ann`` with its inclusive range) and
``meta/camera_info.json`` (the split's calibration, byte for byte). Importing a dataset that has
them gives the split back exactly; any other dataset gets frame ids ``index`` and one annotation
per run of frames with the same non-empty task, the task text as both ``task`` and ``ann``.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .calvin_format import (
    CALVIN_CONTROL_RATE_HZ,
    EPISODE_IDS_FILE,
    FRAME_KEYS,
    LANG_FOLDER,
    CalvinDataset,
    CalvinEpisodeWriter,
    episode_filename,
    to_relative_action,
)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
#: Written by export, read back by import: what a lerobot dataset has no place for.
CALVIN_META_PATH = "meta/calvin_layout.json"
CAMERA_INFO_META_PATH = "meta/camera_info.json"
CAMERA_INFO_FILE = "camera_info.json"  # the split's file (training.dataset.CAMERA_INFO_FILE, which imports torch)
CALVIN_META_FORMAT = "openhelix-calvin-layout/1"
#: lerobot appends these to every dataset's features, in this order (utils/constants.py).
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
#: lerobot's timestamp tolerance when it loads a dataset (LeRobotDataset tolerance_s).
TIMESTAMP_TOLERANCE_S = 1e-4

ROBOT_OBS_NAMES = ("tcp_x", "tcp_y", "tcp_z", "tcp_euler_x", "tcp_euler_y", "tcp_euler_z", "gripper_width",
                   *(f"joint_{i}" for i in range(1, 8)), "gripper_action")
ACTION_NAMES = ("tcp_x", "tcp_y", "tcp_z", "tcp_euler_x", "tcp_euler_y", "tcp_euler_z", "gripper")
REL_ACTION_NAMES = ("d_x", "d_y", "d_z", "d_euler_x", "d_euler_y", "d_euler_z", "gripper")
SCENE_OBS_NAMES = ("sliding_door", "drawer", "button", "switch", "lightbulb", "green_light",
                   *(f"{block}_block_{axis}" for block in ("red", "blue", "pink")
                     for axis in ("x", "y", "z", "euler_x", "euler_y", "euler_z")))

#: CALVIN frame key -> lerobot feature key written by export (and the import defaults), in the
#: order the features are written.
FEATURE_KEYS = {
    "robot_obs": "observation.state",
    "actions": "action",
    "rgb_static": "observation.images.static",
    "rgb_gripper": "observation.images.gripper",
    "depth_static": "observation.images.static_depth",
    "depth_gripper": "observation.images.gripper_depth",
    "rel_actions": "calvin.rel_actions",
    "scene_obs": "calvin.scene_obs",
}
VECTOR_NAMES = {"robot_obs": ROBOT_OBS_NAMES, "actions": ACTION_NAMES, "rel_actions": REL_ACTION_NAMES,
                "scene_obs": SCENE_OBS_NAMES}
#: ``--camera NAME=KEY`` names -> CALVIN frame keys.
CAMERA_NAMES = {"static": "rgb_static", "gripper": "rgb_gripper", "static_depth": "depth_static",
                "gripper_depth": "depth_gripper"}
RGB_KEYS = ("rgb_static", "rgb_gripper")
DEPTH_KEYS = ("depth_static", "depth_gripper")
IMAGE_KEYS = RGB_KEYS + DEPTH_KEYS
VECTOR_SHAPES = {"robot_obs": 15, "actions": 7, "rel_actions": 7, "scene_obs": 24}
#: Frames per parquet write (a row group) and per read batch: CALVIN's episodes run to tens of
#: thousands of frames, which must not sit in memory at once.
_BATCH_FRAMES = 64


class LeRobotFormatError(ValueError):
    """A dataset or split that cannot be converted; the message names the file or feature and why."""


def _pyarrow():
    # pyarrow is imported on use, so importing openhelix_core.data never needs it.
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:  # pragma: no cover - the venv installs it from requirements/ml.txt
        raise LeRobotFormatError("LeRobot datasets need pyarrow: pip install 'pyarrow>=21'") from error
    return pa, pq


# ---------------------------------------------------------------------------------------------
# Statistics (compute_stats.py)
# ---------------------------------------------------------------------------------------------
def estimate_num_samples(length: int, min_samples: int = 100, max_samples: int = 10_000, power: float = 0.75) -> int:
    """Frames of an episode of ``length`` whose images enter its statistics (as lerobot)."""
    if length < min_samples:
        min_samples = length
    return max(min_samples, min(int(length ** power), max_samples))


def sample_indices(length: int) -> List[int]:
    """Evenly spaced frame indices of the image statistics sample."""
    return np.round(np.linspace(0, length - 1, estimate_num_samples(length))).astype(int).tolist()


def _downsample_for_stats(image: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """``image (h, w, c)`` strided as lerobot's ``auto_downsample_height_width`` does."""
    height, width = image.shape[:2]
    if max(height, width) < threshold:
        return image
    factor = int(width / target) if width > height else int(height / target)
    return image[::factor, ::factor]


def _quantile_keys() -> List[str]:
    return [f"q{int(q * 100):02d}" for q in QUANTILES]


def vector_stats(values: np.ndarray) -> Dict[str, np.ndarray]:
    """Statistics of one episode's ``values (N,)`` or ``(N, n)`` over frames: ``(1,)`` or ``(n,)`` each."""
    data = np.asarray(values)
    data = data.reshape(len(data), -1).astype(np.result_type(data.dtype, np.float32), copy=False)
    stats = {"min": data.min(axis=0), "max": data.max(axis=0), "mean": data.mean(axis=0), "std": data.std(axis=0),
             "count": np.array([len(data)])}
    for key, value in zip(_quantile_keys(), np.quantile(data, QUANTILES, axis=0)):
        stats[key] = value
    return stats


class _ImageStats:
    """Per-channel statistics of one episode's sampled images, accumulated frame by frame.

    RGB (uint8) quantiles are exact, from 256-bin histograms; depth quantiles come from a
    strided pixel subset, so a long episode's sample need not be kept in memory."""

    def __init__(self, depth: bool):
        self.depth = depth
        self.frames = 0
        self.pixels = 0
        self._sum = self._sum_sq = self._min = self._max = None
        self._histograms: Optional[np.ndarray] = None
        self._depth_subset: List[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        """One sampled ``image (h, w, c)`` or depth ``(h, w)``."""
        image = _downsample_for_stats(image if image.ndim == 3 else image[..., None])
        pixels = image.reshape(-1, image.shape[-1]).astype(np.float64)
        if self.frames == 0:
            self._sum = np.zeros(pixels.shape[1])
            self._sum_sq = np.zeros(pixels.shape[1])
            self._min = pixels.min(axis=0)
            self._max = pixels.max(axis=0)
            self._histograms = np.zeros((pixels.shape[1], 256), dtype=np.int64)
        self._sum += pixels.sum(axis=0)
        self._sum_sq += (pixels ** 2).sum(axis=0)
        self._min = np.minimum(self._min, pixels.min(axis=0))
        self._max = np.maximum(self._max, pixels.max(axis=0))
        if self.depth:
            self._depth_subset.append(image[::4, ::4].reshape(-1, image.shape[-1]).astype(np.float64))
        else:
            for channel in range(image.shape[-1]):
                self._histograms[channel] += np.bincount(image[..., channel].ravel(), minlength=256)
        self.pixels += pixels.shape[0]
        self.frames += 1

    def result(self) -> Dict[str, np.ndarray]:
        """``(c, 1, 1)`` per statistic (RGB divided by 255), ``count`` the sampled frames."""
        if self.depth:
            quantiles = np.quantile(np.concatenate(self._depth_subset), QUANTILES, axis=0)
        else:
            quantiles = np.stack([_histogram_quantiles(h) for h in self._histograms], axis=1)
        mean = self._sum / self.pixels
        std = np.sqrt(np.maximum(0.0, self._sum_sq / self.pixels - mean ** 2))
        stats = {"min": self._min, "max": self._max, "mean": mean, "std": std, **dict(zip(_quantile_keys(), quantiles))}
        scale = 1.0 if self.depth else 255.0
        out = {k: (np.asarray(v, dtype=np.float64) / scale).reshape(-1, 1, 1) for k, v in stats.items()}
        out["count"] = np.array([self.frames])
        return out


def _histogram_quantiles(histogram: np.ndarray) -> np.ndarray:
    """Exact quantiles (numpy's linear interpolation) of uint8 values given as a 256-bin histogram."""
    cumulative = np.cumsum(histogram)
    n = cumulative[-1]
    out = []
    for q in QUANTILES:
        position = q * (n - 1)
        low, high = int(math.floor(position)), int(math.ceil(position))
        value_low = int(np.searchsorted(cumulative, low, side="right"))
        value_high = int(np.searchsorted(cumulative, high, side="right"))
        out.append(value_low + (value_high - value_low) * (position - low))
    return np.array(out, dtype=np.float64)


def aggregate_stats(per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> Dict[str, Dict[str, np.ndarray]]:
    """Dataset statistics from per-episode ones, combined as lerobot's ``aggregate_stats``."""
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for key in dict.fromkeys(k for stats in per_episode for k in stats):
        items = [stats[key] for stats in per_episode if key in stats]
        means = np.stack([s["mean"] for s in items])
        variances = np.stack([s["std"] ** 2 for s in items])
        counts = np.stack([s["count"] for s in items])
        total = counts.sum(axis=0)
        weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
        mean = (means * weights).sum(axis=0) / total
        variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
        combined = {"min": np.min(np.stack([s["min"] for s in items]), axis=0),
                    "max": np.max(np.stack([s["max"] for s in items]), axis=0),
                    "mean": mean, "std": np.sqrt(variance), "count": total}
        for q_key in _quantile_keys():
            if all(q_key in s for s in items):
                values = np.stack([s[q_key] for s in items])
                # Quantiles do not combine; lerobot keeps a conservative envelope.
                combined[q_key] = values.min(axis=0) if int(q_key[1:]) <= 50 else values.max(axis=0)
        out[key] = combined
    return out


def _stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {key: {name: np.asarray(value).tolist() for name, value in values.items()} for key, values in stats.items()}


# ---------------------------------------------------------------------------------------------
# Features, parquet columns and image encoding
# ---------------------------------------------------------------------------------------------
def _hf_feature(spec: Mapping) -> dict:
    """The ``datasets`` feature (serialized as ``datasets`` 4 writes it) lerobot declares for ``spec``
    (``feature_utils.get_hf_features_from_features``)."""
    if spec["dtype"] == "image":
        return {"_type": "Image"}
    shape = list(spec["shape"])
    if shape == [1]:
        return {"dtype": spec["dtype"], "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": spec["dtype"], "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": shape, "dtype": spec["dtype"], "_type": f"Array{len(shape)}D"}


def _arrow_type(spec: Mapping):
    pa, _ = _pyarrow()
    if spec["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    value_type = pa.from_numpy_dtype(np.dtype(spec["dtype"]))
    shape = list(spec["shape"])
    if shape == [1]:
        return value_type
    if len(shape) == 1:
        return pa.list_(value_type, shape[0])
    for _ in shape:
        value_type = pa.list_(value_type)
    return value_type


def _data_schema(features: Mapping[str, Mapping]):
    pa, _ = _pyarrow()
    stored = {k: v for k, v in features.items() if v["dtype"] != "video"}
    metadata = {"huggingface": json.dumps({"info": {"features": {k: _hf_feature(v) for k, v in stored.items()}}})}
    return pa.schema([pa.field(k, _arrow_type(v)) for k, v in stored.items()], metadata=metadata)


def _encode_rgb_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _encode_depth_tiff(depth: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # Mode "F" (32-bit float) without compression: the bits go in and come out unchanged.
    Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32)).save(buffer, format="TIFF", compression="raw")
    return buffer.getvalue()


def _decode_image(data: Optional[bytes], feature: str, depth_unit: Optional[str] = None) -> np.ndarray:
    """Embedded image bytes -> ``(H, W, 3)`` uint8, or depth ``(H, W)`` float32 metres when
    ``depth_unit`` is given (``"m"``, ``"mm"``, or ``"auto"``: floats are metres, integers mm)."""
    from PIL import Image

    if data is None:
        raise LeRobotFormatError(f"feature '{feature}': an image has no embedded bytes (a v3.0 parquet embeds them)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # Pillow raises many types for a broken file
        raise LeRobotFormatError(f"feature '{feature}': an image cannot be decoded ({error})") from error
    if depth_unit is None:
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    depth = np.asarray(image)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise LeRobotFormatError(f"feature '{feature}': a depth image has {image.mode!r} pixels, expected one channel")
    return _depth_in_metres(depth, depth_unit, feature)


def _depth_in_metres(depth: np.ndarray, unit: str, feature: str) -> np.ndarray:
    if unit == "auto":
        unit = "m" if np.issubdtype(depth.dtype, np.floating) else "mm"
    if unit == "m":
        return depth if depth.dtype == np.float32 else depth.astype(np.float32)
    if unit == "mm":
        return (depth.astype(np.float64) / 1000.0).astype(np.float32)
    raise LeRobotFormatError(f"feature '{feature}': unknown depth_unit {unit!r} (expected 'm' or 'mm')")


def _column_to_numpy(column, spec: Mapping) -> np.ndarray:
    """A parquet column of a numeric feature -> ``(N, *shape)`` (scalars ``(N,)``)."""
    pa, _ = _pyarrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    shape = [int(d) for d in spec["shape"]]
    nesting = 0
    values = column
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type):
        values = values.flatten()
        nesting += 1
    if values.null_count:
        raise LeRobotFormatError("null values in a numeric column")
    flat = values.to_numpy(zero_copy_only=False)
    n = len(column)
    per_row = int(np.prod(shape)) if nesting else 1
    if flat.size != n * per_row:
        raise LeRobotFormatError(f"column holds {flat.size // max(n, 1)} values per frame, the feature's shape {shape} "
                                 f"needs {per_row}")
    return flat.reshape((n,) + (tuple(shape) if nesting else ()))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
@dataclass
class ExportSummary:
    out_dir: Path
    episodes: int
    frames: int
    tasks: int
    data_files: int
    #: CALVIN frame key -> lerobot feature key, for the keys the frames have.
    features: Dict[str, str]
    camera_info: bool
    unannotated_frames: int
    ignored_keys: List[str] = field(default_factory=list)


def _integral_fps(fps: float) -> int:
    value = float(fps)
    if not math.isfinite(value) or value <= 0 or value != round(value):
        raise LeRobotFormatError(f"fps must be a positive whole number (lerobot stores it as an integer), got {fps!r}")
    return int(round(value))


def _whole_if_integral(value: float):
    return int(value) if float(value).is_integer() else float(value)


def _require_empty(directory: Path, what: str) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise LeRobotFormatError(f"{what} {directory} exists and is not empty; choose a new directory")


def _frame_layout(frame: Mapping[str, np.ndarray], frame_id: int) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
    """Shape and dtype of every CALVIN key of the first frame, checked against the format."""
    layout = {}
    for key in ("robot_obs", "actions"):
        if key not in frame:
            raise LeRobotFormatError(f"frame {frame_id} lacks {key!r}; every CALVIN frame has robot_obs and actions")
    for key in FRAME_KEYS:
        if key not in frame:
            continue
        array = np.asarray(frame[key])
        if key in RGB_KEYS and (array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3):
            raise LeRobotFormatError(f"frame {frame_id}: {key} is {array.dtype} {array.shape}, expected uint8 (H, W, 3)")
        if key in DEPTH_KEYS and (array.dtype != np.float32 or array.ndim != 2):
            raise LeRobotFormatError(f"frame {frame_id}: {key} is {array.dtype} {array.shape}, expected float32 (H, W)")
        if key in VECTOR_SHAPES and (array.ndim != 1 or array.dtype.kind not in "fiu"):
            raise LeRobotFormatError(f"frame {frame_id}: {key} is {array.dtype} {array.shape}, expected a numeric vector")
        layout[key] = (array.shape, array.dtype)
    return layout


def _feature_spec(key: str, shape: Tuple[int, ...], dtype: np.dtype) -> dict:
    if key in RGB_KEYS:
        return {"dtype": "image", "shape": list(shape), "names": ["height", "width", "channels"],
                "info": {"is_depth_map": False}}
    if key in DEPTH_KEYS:
        return {"dtype": "image", "shape": [shape[0], shape[1], 1], "names": ["height", "width", "channels"],
                "info": {"is_depth_map": True, "depth_unit": "m"}}
    names = VECTOR_NAMES[key]
    return {"dtype": str(dtype), "shape": list(shape), "names": list(names) if len(names) == shape[0] else None}


def _frame_tasks(start: int, end: int, segments: Sequence[Tuple[int, int, str, str]]) -> List[str]:
    """The task text of every frame in [start, end]: the sentence of the covering annotation that
    started last (ties: the later one in the file), "" where none covers the frame."""
    chosen = np.full(end - start + 1, -1)
    order = sorted(range(len(segments)), key=lambda i: segments[i][0])
    for i in order:
        s, e = max(segments[i][0], start), min(segments[i][1], end)
        if s <= e:
            chosen[s - start:e - start + 1] = i
    return [segments[i][3] if i >= 0 else "" for i in chosen]


def _next_file(chunk: int, file: int, chunks_size: int = CHUNKS_SIZE) -> Tuple[int, int]:
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def _write_tasks(path: Path, tasks: Mapping[str, int]) -> None:
    """tasks.parquet as pandas writes lerobot's DataFrame: ``task_index`` and the index ``task``."""
    pa, pq = _pyarrow()
    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={"pandas": json.dumps(pandas_metadata)})
    table = pa.table({"task_index": list(tasks.values()), "task": list(tasks.keys())}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _dataset_card(repo_id: str, info: Mapping) -> str:
    return (f"---\nlicense: other\ntags:\n- LeRobot\ntask_categories:\n- robotics\nconfigs:\n- config_name: default\n"
            f"  data_files: data/*/*.parquet\n---\n\n# {repo_id}\n\nA CALVIN-layout split converted to "
            f"LeRobotDataset {CODEBASE_VERSION} by openhelix-ros (`openhelix dataset-export`): "
            f"{info['total_episodes']} episodes, {info['total_frames']} frames at {info['fps']} fps, "
            f"robot_type `{info['robot_type']}`. `meta/calvin_layout.json` and `meta/camera_info.json` let "
            f"`openhelix dataset-import` restore the split exactly.\n")


def export_lerobot(split_dir, out_dir, fps: float = CALVIN_CONTROL_RATE_HZ, robot_type: str = "franka_panda",
                   repo_id: Optional[str] = None, data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB) -> ExportSummary:
    """Write the CALVIN split ``split_dir`` as a LeRobotDataset v3.0 in the new directory ``out_dir``.

    One lerobot episode per row of ``ep_start_end_ids``; features, tasks and what travels in
    ``meta/`` are described in the module doc. ``repo_id`` is named in the dataset card (default
    ``local/<out_dir name>``); ``data_files_size_in_mb`` is lerobot's size at which the next
    episode starts a new data file. A failed export leaves no partial dataset behind.

    Raises:
        LeRobotFormatError: the split is missing or malformed, a frame differs from the first
            one in keys, shapes or dtypes, ``fps`` is not a whole number, or ``out_dir`` is not empty.
    """
    out = Path(out_dir)
    _require_empty(out, "output directory")
    existed = out.exists()
    try:
        return _export(Path(split_dir), out, fps, robot_type, repo_id, data_files_size_in_mb)
    except BaseException:
        # out_dir was new or empty, so everything in it now was written by this export.
        _remove_written(out, list(out.iterdir()) if out.is_dir() else [], remove_dir=not existed)
        raise


def _remove_written(directory: Path, paths: Sequence[Path], remove_dir: bool) -> None:
    """Delete ``paths`` (files or whole folders) and, with ``remove_dir``, ``directory`` when empty."""
    import shutil

    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if remove_dir and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _export(split: Path, out: Path, fps: float, robot_type: str, repo_id: Optional[str],
            data_files_size_in_mb: float) -> ExportSummary:
    pa, pq = _pyarrow()
    fps_int = _integral_fps(fps)
    try:
        reader = CalvinDataset(split)
        episodes = reader.episodes()
        segments = reader.annotated_segments()
    except (OSError, ValueError) as error:
        raise LeRobotFormatError(f"cannot read the CALVIN split {split}: {error}") from error
    if len(episodes) == 0:
        raise LeRobotFormatError(f"{split}: ep_start_end_ids.npy lists no episode")
    camera_info = split / CAMERA_INFO_FILE
    if camera_info.is_file():
        try:
            json.loads(camera_info.read_text())
        except json.JSONDecodeError as error:
            raise LeRobotFormatError(f"{camera_info} is not valid JSON: {error}") from error

    def load(frame_id: int) -> Dict[str, np.ndarray]:
        try:
            return reader.load_frame(frame_id)
        except (OSError, ValueError, IndexError) as error:
            raise LeRobotFormatError(f"{split}: frame {frame_id} cannot be read: {error}") from error

    first = load(int(episodes[0][0]))
    layout = _frame_layout(first, int(episodes[0][0]))
    keys = [k for k in FEATURE_KEYS if k in layout]
    ignored = sorted(set(first) - set(FRAME_KEYS))
    features = {FEATURE_KEYS[k]: _feature_spec(k, *layout[k]) for k in keys}
    all_features = {**features, **DEFAULT_FEATURES}
    schema = _data_schema(all_features)
    limit_bytes = float(data_files_size_in_mb) * 1024 ** 2

    tasks: Dict[str, int] = {}
    episode_rows: List[dict] = []
    episode_stats: List[Dict[str, Dict[str, np.ndarray]]] = []
    chunk, file, writer = 0, 0, None
    file_bytes, file_frames, data_files, global_index, unannotated = 0, 0, 0, 0, 0
    out.mkdir(parents=True, exist_ok=True)
    try:
        for episode_index, (start, end) in enumerate(episodes.tolist()):
            length = end - start + 1
            if length < 1:
                raise LeRobotFormatError(f"{split}: episode {episode_index} has the empty range ({start}, {end})")
            frame_tasks = _frame_tasks(start, end, segments)
            unannotated += frame_tasks.count("")
            task_indices = np.array([tasks.setdefault(t, len(tasks)) for t in frame_tasks], dtype=np.int64)
            if writer is not None and file_frames and file_bytes + file_bytes / file_frames * length >= limit_bytes:
                writer.close()
                writer = None
                chunk, file = _next_file(chunk, file)
            if writer is None:
                path = out / DATA_PATH.format(chunk_index=chunk, file_index=file)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=True)
                file_bytes = file_frames = 0
                data_files += 1
            sampled = set(sample_indices(length))
            image_stats = {k: _ImageStats(depth=k in DEPTH_KEYS) for k in keys if k in IMAGE_KEYS}
            vectors: Dict[str, List[np.ndarray]] = {k: [] for k in keys if k in VECTOR_SHAPES}
            frame_index = np.arange(length, dtype=np.int64)
            for batch_start in range(0, length, _BATCH_FRAMES):
                offsets = range(batch_start, min(batch_start + _BATCH_FRAMES, length))
                columns: Dict[str, list] = {FEATURE_KEYS[k]: [] for k in keys}
                for offset in offsets:
                    frame_id = start + offset
                    frame = first if frame_id == int(episodes[0][0]) else load(frame_id)
                    for key in keys:
                        if key not in frame:
                            raise LeRobotFormatError(f"frame {frame_id} lacks {key!r}, which frame {int(episodes[0][0])} has")
                        array = np.asarray(frame[key])
                        if (array.shape, array.dtype) != layout[key]:
                            raise LeRobotFormatError(f"frame {frame_id}: {key} is {array.dtype} {array.shape}, the first "
                                                     f"frame's is {layout[key][1]} {layout[key][0]}")
                        if key in VECTOR_SHAPES:
                            vectors[key].append(array)
                            columns[FEATURE_KEYS[key]].append(array)
                            continue
                        if offset in sampled:
                            image_stats[key].add(array)
                        encoded = _encode_depth_tiff(array) if key in DEPTH_KEYS else _encode_rgb_png(array)
                        suffix = "tiff" if key in DEPTH_KEYS else "png"
                        columns[FEATURE_KEYS[key]].append({"bytes": encoded, "path": f"frame-{offset:06d}.{suffix}"})
                rows = np.arange(offsets.start, offsets.stop)
                arrays = []
                for name, spec in all_features.items():
                    if name in DEFAULT_FEATURES:
                        values = {"timestamp": (rows / fps_int).astype(np.float32), "frame_index": rows,
                                  "episode_index": np.full(len(rows), episode_index, dtype=np.int64),
                                  "index": global_index + rows, "task_index": task_indices[rows]}[name]
                        arrays.append(pa.array(values, type=_arrow_type(spec)))
                    elif spec["dtype"] == "image":
                        arrays.append(pa.array(columns[name], type=_arrow_type(spec)))
                    else:
                        stacked = np.stack(columns[name])
                        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(stacked.reshape(-1)), stacked.shape[1]))
                batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
                writer.write_batch(batch)
                file_bytes += batch.nbytes
                file_frames += len(rows)
            stats = {FEATURE_KEYS[k]: vector_stats(np.stack(v)) for k, v in vectors.items()}
            stats.update({FEATURE_KEYS[k]: s.result() for k, s in image_stats.items()})
            stats.update({"timestamp": vector_stats((frame_index / fps_int).astype(np.float32)),
                          "frame_index": vector_stats(frame_index),
                          "episode_index": vector_stats(np.full(length, episode_index, dtype=np.int64)),
                          "index": vector_stats(global_index + frame_index),
                          "task_index": vector_stats(task_indices)})
            stats = {name: stats[name] for name in all_features}
            episode_stats.append(stats)
            row = {"episode_index": episode_index, "tasks": list(dict.fromkeys(frame_tasks)), "length": length,
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": global_index, "dataset_to_index": global_index + length}
            row.update({f"stats/{name}/{stat}": np.asarray(value).tolist()
                        for name, values in stats.items() for stat, value in values.items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            episode_rows.append(row)
            global_index += length
    finally:
        if writer is not None:
            writer.close()

    episodes_table = pa.Table.from_pylist(episode_rows)
    episodes_path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(episodes_table, episodes_path, compression="snappy")
    _write_tasks(out / TASKS_PATH, tasks)
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes),
            "total_frames": global_index, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": _whole_if_integral(data_files_size_in_mb), "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": fps_int, "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": None,
            "features": all_features}
    _write_json(out / INFO_PATH, info)
    _write_json(out / STATS_PATH, _stats_to_json(aggregate_stats(episode_stats)))
    _write_json(out / CALVIN_META_PATH, {
        "format": CALVIN_META_FORMAT,
        "frame_keys": {k: FEATURE_KEYS[k] for k in keys},
        "ep_start_end_ids": episodes.tolist(),
        "annotations": [{"start": s, "end": e, "task": t, "ann": a} for s, e, t, a in segments],
    })
    if camera_info.is_file():
        (out / CAMERA_INFO_META_PATH).write_bytes(camera_info.read_bytes())
    (out / "README.md").write_text(_dataset_card(repo_id or f"local/{out.name}", info))
    return ExportSummary(out, len(episodes), global_index, len(tasks), data_files, {k: FEATURE_KEYS[k] for k in keys},
                         camera_info.is_file(), unannotated, ignored)


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------
@dataclass
class ImportSummary:
    out_dir: Path
    episodes: int
    frames: int
    annotations: int
    fps: float
    #: CALVIN frame key -> the lerobot feature it was read from.
    mapping: Dict[str, str]
    #: True when meta/calvin_layout.json gave back the original frame ids and annotations.
    restored_layout: bool
    camera_info: bool
    warnings: List[str] = field(default_factory=list)


@dataclass
class _Episode:
    index: int
    length: int
    start: int  # dataset_from_index
    chunk: int
    file: int
    videos: Dict[str, Tuple[int, int, float]]  # feature -> (chunk, file, from_timestamp)


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise LeRobotFormatError(f"{path} is missing: not a LeRobotDataset ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LeRobotFormatError(f"{path} is not valid JSON: {error}") from error


def read_info(dataset_dir) -> dict:
    """``meta/info.json`` of a v3 dataset, its version and required fields checked.

    Raises:
        LeRobotFormatError: no info.json, a v1/v2 dataset (with how to convert it), an unknown
            version, or a field missing."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise LeRobotFormatError(f"no such dataset directory: {root}")
    info = _read_json(root / INFO_PATH, "meta/info.json")
    if not isinstance(info, dict):
        raise LeRobotFormatError(f"{root / INFO_PATH} is not a JSON object")
    version = info.get("codebase_version")
    match = re.fullmatch(r"v(\d+)\.(\d+)", str(version))
    if match is None:
        raise LeRobotFormatError(f"{root / INFO_PATH}: unknown codebase_version {version!r}; this reader supports "
                                 f"LeRobotDataset {CODEBASE_VERSION}")
    major = int(match.group(1))
    if major < 3:
        raise LeRobotFormatError(
            f"{root} is a LeRobotDataset {version} (one parquet file per episode, meta/episodes.jsonl); this reader "
            f"needs {CODEBASE_VERSION}. Convert it with lerobot: python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 "
            f"--repo-id=<id> (lerobot 0.4; lerobot.scripts.convert_dataset_v21_to_v30 in later releases)")
    if major > 3:
        raise LeRobotFormatError(f"{root} is a LeRobotDataset {version}, newer than the {CODEBASE_VERSION} this reader "
                                 f"knows")
    missing = [k for k in ("fps", "features", "total_episodes", "total_frames") if k not in info]
    if missing:
        raise LeRobotFormatError(f"{root / INFO_PATH} lacks {missing}")
    if not isinstance(info["features"], dict):
        raise LeRobotFormatError(f"{root / INFO_PATH}: 'features' is not an object")
    return info


def _read_parquet(path: Path, columns: Optional[Sequence[str]] = None):
    _, pq = _pyarrow()
    if not path.is_file():
        raise LeRobotFormatError(f"{path} is missing")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError / KeyError for broken files
        raise LeRobotFormatError(f"{path} is not a readable parquet file ({type(error).__name__}: {error})") from error


def _column_names(path: Path) -> List[str]:
    _, pq = _pyarrow()
    if not path.is_file():
        raise LeRobotFormatError(f"{path} is missing")
    try:
        return list(pq.read_schema(path).names)
    except Exception as error:  # a truncated file has no footer
        raise LeRobotFormatError(f"{path} is not a readable parquet file ({type(error).__name__}: {error})") from error


def _read_tasks(root: Path) -> Dict[int, str]:
    table = _read_parquet(root / TASKS_PATH)
    names = table.column_names
    # pandas stores the index "task" as a column; an unnamed index becomes __index_level_0__.
    text_column = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
    if "task_index" not in names or text_column is None:
        raise LeRobotFormatError(f"{root / TASKS_PATH} has columns {names}, expected task_index and task")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(text_column).to_pylist())}


def _read_episodes(root: Path, info: Mapping) -> List[_Episode]:
    paths = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise LeRobotFormatError(f"{root / EPISODES_DIR} holds no chunk-XXX/file-XXX.parquet: not a v3.0 dataset")
    video_keys = [k for k, v in info["features"].items() if v.get("dtype") == "video"]
    needed = ["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index"]
    for key in video_keys:
        needed += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
    episodes = []
    for path in paths:
        schema_names = _column_names(path)
        missing = [c for c in needed if c not in schema_names]
        if missing:
            raise LeRobotFormatError(f"{path} lacks the columns {missing}")
        table = _read_parquet(path, columns=needed).to_pydict()
        for row in range(len(table["episode_index"])):
            videos = {key: (int(table[f"videos/{key}/chunk_index"][row]), int(table[f"videos/{key}/file_index"][row]),
                            float(table[f"videos/{key}/from_timestamp"][row])) for key in video_keys}
            episode = _Episode(int(table["episode_index"][row]), int(table["length"][row]),
                               int(table["dataset_from_index"][row]), int(table["data/chunk_index"][row]),
                               int(table["data/file_index"][row]), videos)
            if int(table["dataset_to_index"][row]) - episode.start != episode.length or episode.length < 1:
                raise LeRobotFormatError(f"{path}: episode {episode.index} has length {episode.length} but the index "
                                         f"range [{episode.start}, {table['dataset_to_index'][row]})")
            episodes.append(episode)
    episodes.sort(key=lambda e: e.index)
    if [e.index for e in episodes] != list(range(len(episodes))):
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: episode indices are not 0..{len(episodes) - 1}")
    if len(episodes) != int(info["total_episodes"]):
        raise LeRobotFormatError(f"{root}: info.json says {info['total_episodes']} episodes, meta/episodes lists "
                                 f"{len(episodes)}")
    return episodes


def _describe(features: Mapping[str, Mapping]) -> str:
    return ", ".join(f"{k} ({v.get('dtype')} {list(v.get('shape', []))})" for k, v in features.items()
                     if k not in DEFAULT_FEATURES)


def _channels(spec: Mapping) -> Optional[int]:
    """Channels of an image/video feature: shape (H, W, C) with names ending in channel(s), else (C, H, W)."""
    shape = list(spec.get("shape", []))
    if len(shape) == 2:
        return 1
    if len(shape) != 3:
        return None
    names = spec.get("names") or []
    if isinstance(names, list) and len(names) == 3 and str(names[0]).startswith("channel"):
        return int(shape[0])
    return int(shape[2]) if shape[2] in (1, 3) or shape[0] not in (1, 3) else int(shape[0])


def resolve_mapping(features: Mapping[str, Mapping], cameras: Optional[Mapping[str, str]] = None,
                    state_key: Optional[str] = None, action_key: Optional[str] = None) -> Dict[str, str]:
    """CALVIN frame key -> feature of ``features`` (a dataset's info.json features).

    ``cameras`` maps the names static / gripper / static_depth / gripper_depth to features;
    unnamed cameras, the state (``observation.state``), the action (``action``) and
    ``calvin.rel_actions`` / ``calvin.scene_obs`` default to the keys export writes, when present.

    Raises:
        LeRobotFormatError: an unknown camera name, a mapping to a missing feature, no RGB camera,
            no state or action, or a feature whose dtype or shape does not fit (messages list the
            dataset's features)."""
    cameras = dict(cameras or {})
    available = f"the dataset's features are: {_describe(features)}"
    unknown = sorted(set(cameras) - set(CAMERA_NAMES))
    if unknown:
        raise LeRobotFormatError(f"unknown camera name(s) {unknown}; use {sorted(CAMERA_NAMES)}")
    mapping: Dict[str, str] = {}
    for name, calvin_key in CAMERA_NAMES.items():
        if name in cameras:
            if cameras[name] not in features:
                raise LeRobotFormatError(f"--camera {name}={cameras[name]}: no such feature; {available}")
            mapping[calvin_key] = cameras[name]
        elif FEATURE_KEYS[calvin_key] in features:
            mapping[calvin_key] = FEATURE_KEYS[calvin_key]
    if not any(k in mapping for k in RGB_KEYS):
        raise LeRobotFormatError(f"no RGB camera mapped (pass --camera static=FEATURE); {available}")
    for calvin_key, given, flag in (("robot_obs", state_key, "--state-key"), ("actions", action_key, "--action-key")):
        key = given or FEATURE_KEYS[calvin_key]
        if key not in features:
            hint = f"{flag} {key}: no such feature" if given else f"no feature '{key}' (pass {flag} FEATURE)"
            raise LeRobotFormatError(f"{hint}; {available}")
        mapping[calvin_key] = key
    for calvin_key in ("rel_actions", "scene_obs"):
        if FEATURE_KEYS[calvin_key] in features:
            mapping[calvin_key] = FEATURE_KEYS[calvin_key]

    for calvin_key, key in mapping.items():
        spec = features[key]
        dtype, shape = spec.get("dtype"), [int(d) for d in spec.get("shape", [])]
        if calvin_key in VECTOR_SHAPES:
            if dtype in ("image", "video", "string") or shape != [VECTOR_SHAPES[calvin_key]]:
                raise LeRobotFormatError(f"feature '{key}' is {dtype} {shape}; CALVIN's {calvin_key} needs "
                                         f"{VECTOR_SHAPES[calvin_key]} numbers ({', '.join(VECTOR_NAMES[calvin_key])})")
        elif calvin_key in RGB_KEYS:
            if dtype not in ("image", "video") or _channels(spec) != 3:
                raise LeRobotFormatError(f"feature '{key}' is {dtype} {shape}; {calvin_key} needs an RGB image or video "
                                         f"feature of shape [H, W, 3]")
        else:
            numeric_depth = dtype not in ("image", "video", "string") and len(shape) in (2, 3) and shape[2:] in ([], [1])
            if dtype == "video" or not (numeric_depth or (dtype == "image" and _channels(spec) == 1)):
                why = (" (lerobot's depth videos are 12-bit quantized; convert them to images)" if dtype == "video"
                       else "")
                raise LeRobotFormatError(f"feature '{key}' is {dtype} {shape}; {calvin_key} needs a one-channel depth "
                                         f"image [H, W, 1] or a float array [H, W]{why}")
    return mapping


def _video_module(mapping: Mapping[str, str], features: Mapping[str, Mapping]):
    videos = [key for key in mapping.values() if features[key].get("dtype") == "video"]
    if not videos:
        return None
    try:
        import av
    except ImportError as error:
        raise LeRobotFormatError(f"feature(s) {videos} are stored as video; decoding them needs PyAV "
                                 f"(pip install av), or convert the dataset to images") from error
    return av


class _VideoFrames:
    """Frames of one episode in an MP4 file, taken in timestamp order (PyAV)."""

    def __init__(self, av, path: Path, from_timestamp: float, tolerance_s: float):
        if not path.is_file():
            raise LeRobotFormatError(f"{path} is missing")
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
            self._container.seek(max(0, int(from_timestamp / stream.time_base)), stream=stream, backward=True)
            self._frames = self._container.decode(stream)
        except Exception as error:  # PyAV's errors derive from several bases
            raise LeRobotFormatError(f"{path} cannot be decoded ({error})") from error
        self._path, self._start, self._tolerance = path, from_timestamp, tolerance_s
        self._current: Optional[Tuple[float, object]] = None
        self._next: Optional[Tuple[float, object]] = None

    def _advance(self) -> Optional[Tuple[float, object]]:
        frame = next(self._frames, None)
        return None if frame is None else (float(frame.time), frame)

    def at(self, timestamp: float) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 frame shown at ``timestamp`` seconds into the episode."""
        target = self._start + timestamp
        if self._current is None:
            self._current = self._advance()
            self._next = self._advance()
        while self._next is not None and self._next[0] <= target + self._tolerance:
            self._current, self._next = self._next, self._advance()
        if self._current is None or abs(self._current[0] - target) > self._tolerance:
            raise LeRobotFormatError(f"{self._path}: no frame at {target:.4f} s")
        return self._current[1].to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()


def _read_calvin_meta(root: Path, episodes: Sequence[_Episode], warnings: List[str]) -> Optional[dict]:
    """meta/calvin_layout.json when it exists and still matches the episodes."""
    path = root / CALVIN_META_PATH
    if not path.is_file():
        return None
    meta = _read_json(path, "openhelix metadata")
    try:
        ids = [(int(s), int(e)) for s, e in meta["ep_start_end_ids"]]
        annotations = [(int(a["start"]), int(a["end"]), str(a["task"]), str(a["ann"])) for a in meta["annotations"]]
        frame_keys = [str(k) for k in meta["frame_keys"]]
        fmt = meta["format"]
    except (KeyError, TypeError, ValueError) as error:
        raise LeRobotFormatError(f"{path} is malformed ({error!r})") from error
    if fmt != CALVIN_META_FORMAT:
        warnings.append(f"{path}: unknown format {fmt!r}; frame ids and annotations rebuilt from the tasks")
        return None
    if len(ids) != len(episodes) or any(e - s + 1 != ep.length for (s, e), ep in zip(ids, episodes)):
        warnings.append(f"{path} no longer matches the episodes (edited with lerobot?); frame ids and annotations "
                        f"rebuilt from the tasks")
        return None
    return {"ids": ids, "annotations": annotations, "frame_keys": frame_keys}


def import_lerobot(dataset_dir, out_split_dir, cameras: Optional[Mapping[str, str]] = None,
                   state_key: Optional[str] = None, action_key: Optional[str] = None,
                   fps_check: bool = False) -> ImportSummary:
    """Write the LeRobotDataset v3.0 ``dataset_dir`` as a CALVIN split in ``out_split_dir``.

    Features are picked by :func:`resolve_mapping`. A dataset with ``meta/calvin_layout.json`` (an
    export) gets back exactly the frame keys it had; in any other dataset, missing
    ``calvin.rel_actions`` are computed from the action and state (CALVIN's ``to_relative_action``)
    and a missing ``calvin.scene_obs`` stays absent. Depth images in millimetres (``depth_unit`` "mm", or integer pixels) become float32
    metres. ``fps_check``: refuse a dataset not at CALVIN's 30 fps, or whose timestamps are not
    ``frame_index / fps`` (lerobot's 1e-4 s tolerance); without it a different fps is only a warning.

    Raises:
        LeRobotFormatError: see :func:`read_info` and :func:`resolve_mapping`; also missing or
            corrupt files, frames that disagree with the metadata or the features' shapes, and an
            output folder that already holds frames. A failed import removes what it wrote.
    """
    out = Path(out_split_dir)
    existed = out.exists()
    written: List[Path] = []
    try:
        return _import(Path(dataset_dir), out, cameras, state_key, action_key, fps_check, written)
    except BaseException:
        _remove_written(out, written, remove_dir=not existed)
        raise


def _import(root: Path, out: Path, cameras: Optional[Mapping[str, str]], state_key: Optional[str],
            action_key: Optional[str], fps_check: bool, written: List[Path]) -> ImportSummary:
    """:func:`import_lerobot`; appends every file or folder it creates in ``out`` to ``written``."""
    info = read_info(root)
    features = info["features"]
    mapping = resolve_mapping(features, cameras, state_key, action_key)
    warnings: List[str] = []
    fps = float(info["fps"])
    if fps != CALVIN_CONTROL_RATE_HZ:
        message = (f"the dataset is recorded at {fps:g} fps; CALVIN-layout training times one action per frame at "
                   f"{CALVIN_CONTROL_RATE_HZ:g} Hz")
        if fps_check:
            raise LeRobotFormatError(message)
        warnings.append(message)
    av = _video_module(mapping, features)
    tasks = _read_tasks(root)
    episodes = _read_episodes(root, info)
    calvin_meta = _read_calvin_meta(root, episodes, warnings)
    if out.is_dir() and (any(out.glob("episode_*.npz")) or (out / EPISODE_IDS_FILE).exists()
                         or (out / LANG_FOLDER).exists()):
        raise LeRobotFormatError(f"{out} already holds a CALVIN split (episode_*.npz, {EPISODE_IDS_FILE} or "
                                 f"{LANG_FOLDER}/); choose a new split folder")
    camera_info = root / CAMERA_INFO_META_PATH
    if camera_info.is_file():
        try:
            json.loads(camera_info.read_text())
        except json.JSONDecodeError as error:
            raise LeRobotFormatError(f"{camera_info} is not valid JSON: {error}") from error
    else:
        warnings.append("the dataset carries no camera calibration (meta/camera_info.json); training will assume "
                        "CALVIN's cameras unless the split gets a camera_info.json")
    out.mkdir(parents=True, exist_ok=True)

    stored = [key for key in dict.fromkeys(mapping.values()) if features[key].get("dtype") != "video"]
    columns = list(dict.fromkeys([*stored, "episode_index", "frame_index", "index", "task_index", "timestamp"]))
    depth_units = {key: (features[key].get("info") or {}).get("depth_unit") or "auto"
                   for calvin_key, key in mapping.items() if calvin_key in DEPTH_KEYS}
    files = sorted({(e.chunk, e.file) for e in episodes})
    data_path = str(info.get("data_path") or DATA_PATH)
    video_path = str(info.get("video_path") or VIDEO_PATH)
    expected = {e.index: e for e in episodes}
    counts = {e.index: 0 for e in episodes}
    ids = calvin_meta["ids"] if calvin_meta else [(e.start, e.start + e.length - 1) for e in episodes]
    frame_tasks: Dict[int, List[int]] = {e.index: [] for e in episodes}
    synthesized = set(calvin_meta["frame_keys"]) if calvin_meta else {"rel_actions"}
    videos: Dict[str, _VideoFrames] = {}
    video_episode = -1
    tolerance = TIMESTAMP_TOLERANCE_S

    try:
        for chunk, file in files:
            path = root / data_path.format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise LeRobotFormatError(f"{path} is missing (listed in {EPISODES_DIR})")
            names = _column_names(path)
            missing = [c for c in columns if c not in names]
            if missing:
                raise LeRobotFormatError(f"{path} lacks the columns {missing}")
            for batch in _iter_batches(path, columns):
                numeric = {key: _checked_column(batch.column(key), features[key], key, path)
                           for key in columns if key in DEFAULT_FEATURES or features[key].get("dtype") != "image"}
                images = {key: batch.column(key).field("bytes").to_pylist()
                          for key in columns if key not in DEFAULT_FEATURES and features[key].get("dtype") == "image"}
                for row in range(batch.num_rows):
                    episode_index = int(numeric["episode_index"][row])
                    episode = expected.get(episode_index)
                    frame_index = int(numeric["frame_index"][row])
                    if episode is None or (episode.chunk, episode.file) != (chunk, file):
                        raise LeRobotFormatError(f"{path}: a frame of episode {episode_index}, which {EPISODES_DIR} does "
                                                 f"not place in this file")
                    if frame_index != counts[episode_index] or int(numeric["index"][row]) != episode.start + frame_index:
                        raise LeRobotFormatError(f"{path}: episode {episode_index} frame {frame_index} (index "
                                                 f"{int(numeric['index'][row])}) is out of order")
                    timestamp = float(numeric["timestamp"][row])
                    if fps_check and abs(timestamp - frame_index / fps) > tolerance:
                        raise LeRobotFormatError(f"{path}: episode {episode_index} frame {frame_index} has timestamp "
                                                 f"{timestamp:.6f}, not frame_index / fps = {frame_index / fps:.6f}")
                    if episode_index != video_episode:
                        for reader in videos.values():
                            reader.close()
                        videos = {}
                        for key, (v_chunk, v_file, start) in episode.videos.items():
                            if key in mapping.values():
                                videos[key] = _VideoFrames(av, root / video_path.format(
                                    video_key=key, chunk_index=v_chunk, file_index=v_file), start, 0.5 / fps)
                        video_episode = episode_index
                    frame = {}
                    for calvin_key in FRAME_KEYS:
                        key = mapping.get(calvin_key)
                        if key is None:
                            continue
                        if key in videos:
                            frame[calvin_key] = videos[key].at(timestamp)
                        elif key in images:
                            frame[calvin_key] = _decode_image(images[key][row], key, depth_units.get(key)
                                                              if calvin_key in DEPTH_KEYS else None)
                        else:
                            value = numeric[key][row]
                            if calvin_key in DEPTH_KEYS:
                                value = _depth_in_metres(value.reshape(value.shape[:2]), depth_units[key], key)
                            frame[calvin_key] = value
                        _check_shape(frame[calvin_key], features[key], key, calvin_key)
                    # An export's frames come back with exactly their keys; other datasets get
                    # CALVIN's relative actions (a simulator state they do not have stays absent).
                    if "rel_actions" not in frame and "rel_actions" in synthesized:
                        frame["rel_actions"] = to_relative_action(frame["actions"], frame["robot_obs"])
                    frame_id = ids[episode_index][0] + frame_index
                    written.append(out / episode_filename(frame_id))
                    np.savez_compressed(written[-1],
                                        **{k: frame[k] for k in FRAME_KEYS if k in frame})
                    frame_tasks[episode_index].append(int(numeric["task_index"][row]))
                    counts[episode_index] += 1
    finally:
        for reader in videos.values():
            reader.close()

    short = [(i, counts[i], e.length) for i, e in expected.items() if counts[i] != e.length]
    if short:
        i, found, length = short[0]
        raise LeRobotFormatError(f"{root / 'data'}: episode {i} has {found} frames, meta/episodes says {length}")
    unknown_tasks = sorted({t for ts in frame_tasks.values() for t in ts} - set(tasks))
    if unknown_tasks:
        raise LeRobotFormatError(f"{root / TASKS_PATH} lacks task_index {unknown_tasks}, which frames use")

    if calvin_meta:
        annotations = calvin_meta["annotations"]
    else:
        annotations = []
        for episode in episodes:
            start_id = ids[episode.index][0]
            for run_start, run_end, task_index in _runs(frame_tasks[episode.index]):
                text = tasks[task_index]
                if text:
                    annotations.append((start_id + run_start, start_id + run_end, text, text))
    written += [out / EPISODE_IDS_FILE, out / LANG_FOLDER]
    writer = CalvinEpisodeWriter(out, start_index=max(e for _, e in ids) + 1)
    writer.episodes = [tuple(pair) for pair in ids]
    for start, end, task, ann in annotations:
        writer.annotate(start, end, task, ann)
    writer.close()
    if camera_info.is_file():
        written.append(out / CAMERA_INFO_FILE)
        written[-1].write_bytes(camera_info.read_bytes())
    return ImportSummary(out, len(episodes), sum(counts.values()), len(annotations), fps, mapping,
                         calvin_meta is not None, camera_info.is_file(), warnings)


def _iter_batches(path: Path, columns: Sequence[str]) -> Iterator:
    _, pq = _pyarrow()
    try:
        parquet = pq.ParquetFile(path)
        yield from parquet.iter_batches(batch_size=_BATCH_FRAMES, columns=list(columns))
    except LeRobotFormatError:
        raise
    except Exception as error:  # truncated or corrupt pages surface while reading
        raise LeRobotFormatError(f"{path} is not a readable parquet file ({type(error).__name__}: {error})") from error


def _checked_column(column, spec: Mapping, key: str, path: Path) -> np.ndarray:
    try:
        return _column_to_numpy(column, spec)
    except LeRobotFormatError as error:
        raise LeRobotFormatError(f"{path}: feature '{key}': {error}") from error


def _check_shape(value: np.ndarray, spec: Mapping, key: str, calvin_key: str) -> None:
    shape = tuple(int(d) for d in spec.get("shape", []))
    if calvin_key in VECTOR_SHAPES:
        ok = value.shape == shape
    else:
        # Images are declared (H, W, C) (or (C, H, W)); depth drops its channel.
        height_width = {shape[:2], shape[1:]} if len(shape) == 3 else {shape}
        ok = value.shape[:2] in height_width
    if not ok:
        raise LeRobotFormatError(f"feature '{key}': a frame has shape {list(value.shape)}, info.json declares {list(shape)}")


def _runs(values: Sequence[int]) -> Iterator[Tuple[int, int, int]]:
    """(first, last, value) of every run of equal consecutive values."""
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            yield start, i - 1, values[start]
            start = i
