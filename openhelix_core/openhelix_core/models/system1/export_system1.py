"""System 1 exported to ONNX and sampled with ONNX Runtime.

Two graphs, both the fast path's mathematics (:class:`~.configuration_system1.SamplerConfig`
``fast=True``) with the weights, workspace bounds and goal statistics of the model baked in:

- ``system1_encoder.onnx``: :meth:`~.modeling_system1.DiffuserActor.encode_scene`, i.e.
  ``rgb (B, ncam, 3, H, W)``, ``pcd (B, ncam, 3, H, W)``, ``gripper (B, nhist, 8)`` and, when
  the model reads a goal, ``goal (B, L, goal_dim)`` -> ``context_feats (B, N, F)``,
  ``context_pos (B, N, F, 2)``, ``goal_feats (B, L, F)`` (with a goal), ``gripper_feats
  (B, nhist, F)``, ``current (B, 8)``. Farthest point sampling is a data-dependent loop and
  stays outside the graph (:meth:`~.modeling_system1.Encoder.run_fps` on its outputs);
- ``system1_denoiser.onnx``: one denoising step, ``trajectory (B, T, 9)``, ``timestep (B,)``
  (float: DDPM/DDIM step numbers and flow-matching levels alike) and the encoder outputs plus
  ``fps_feats (B, K, F)``, ``fps_pos (B, K, F, 2)`` -> ``(B, T, 10)``. It is
  :class:`~.sampling_system1.CachedDenoiser` built and called for that one step, so the
  per-call cache (scene keys and values, goal attention) is recomputed at every step.

The batch axis is dynamic; image size, camera count, ``nhist``, ``T`` and the number of goal
tokens ``L`` are those of the export (``L`` decides whether the single-goal-token shortcut is
in the graph). A graph does not follow later changes to the model (weights, bounds, goal
statistics): export again after them.

:class:`OnnxSystem1` samples with the two graphs and the model's own loop
(:meth:`~.modeling_system1.DiffuserActor.denoise`: the same schedulers, noise and committed
waypoints), so with the same generator it returns what ``predict_trajectory`` does, to float
rounding. ``onnx``, ``onnxscript`` (for ``torch.onnx.export``) and ``onnxruntime`` are
imported only here.

Usage::

    model = DiffuserActor.from_pretrained("checkpoints/system1")
    export_system1(model, "system1_onnx", example_batch)      # example_batch: B >= 2, L goal tokens
    runner = OnnxSystem1(model, "system1_onnx")                 # TensorRT / CUDA when installed, else CPU
    trajectory = runner.predict_trajectory(batch, generator=generator, sampler=SamplerConfig("ddim", 3))
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .configuration_system1 import SamplerConfig
from .keys import CURRENT_GRIPPER, GOAL, PCD, RGB
from .modeling_system1 import DiffuserActor
from .sampling_system1 import CachedDenoiser

ENCODER_FILE = "system1_encoder.onnx"
DENOISER_FILE = "system1_denoiser.onnx"
#: Execution providers in order of preference; those the installed onnxruntime lacks are skipped.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _encoder_inputs(model: DiffuserActor) -> list[tuple[str, str]]:
    """``(graph input name, batch key)`` pairs of the encoder graph."""
    names = [("rgb", RGB), ("pcd", PCD), ("gripper", CURRENT_GRIPPER)]
    return names + ([("goal", GOAL)] if model.config.use_instruction else [])


def _encoder_outputs(model: DiffuserActor) -> list[str]:
    """Names of the encoder graph's outputs (keys of ``encode_scene`` that the denoiser reads)."""
    goal = ["goal_feats"] if model.config.use_instruction else []
    return ["context_feats", "context_pos"] + goal + ["gripper_feats", "current"]


def _denoiser_fixed(model: DiffuserActor) -> list[str]:
    """The ``fixed`` tensors the denoiser graph takes after ``trajectory`` and ``timestep``."""
    return [name for name in _encoder_outputs(model) if name != "current"] + ["fps_feats", "fps_pos"]


class _EncoderGraph(nn.Module):
    """``encode_scene(fast=True)`` on positional tensors (named by :func:`_encoder_inputs`)."""

    def __init__(self, model: DiffuserActor) -> None:
        super().__init__()
        self.model = model
        # Registered here so that the exporter stores its weights as the graph's own.
        self.folded_backbone = model.encoder.inference_backbone()

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = {key: tensor for (_, key), tensor in zip(_encoder_inputs(self.model), tensors)}
        fixed = self.model.encode_scene(batch, fast=True)
        return tuple(fixed[name] for name in _encoder_outputs(self.model))


class _DenoiserGraph(nn.Module):
    """One step of :class:`CachedDenoiser`: ``trajectory (B, T, 9)``, ``timestep (B,)`` and the
    fixed tensors named by :func:`_denoiser_fixed` -> ``(B, T, 10)``."""

    def __init__(self, model: DiffuserActor) -> None:
        super().__init__()
        self.model = model

    def forward(self, trajectory: torch.Tensor, timestep: torch.Tensor, *fixed: torch.Tensor) -> torch.Tensor:
        tensors = dict(zip(_denoiser_fixed(self.model), fixed))
        tensors.setdefault("goal_feats", None)
        return CachedDenoiser(self.model.prediction_head, tensors, [timestep])(trajectory, 0)


def export_system1(model: DiffuserActor, directory: Union[str, Path], batch: Mapping[str, torch.Tensor],
                   opset: int = 18) -> tuple[Path, Path]:
    """Write :data:`ENCODER_FILE` and :data:`DENOISER_FILE` for ``model`` to ``directory``.

    Args:
        model: a CPU float32 model; it is put in eval mode.
        directory: created when missing.
        batch: example inputs (``RGB``, ``PCD``, ``CURRENT_GRIPPER``, ``GOAL``) with
            the shapes to serve, except the batch size, which stays dynamic. A batch size of at
            least 2 keeps the exporter from specialising the graphs to one.
        opset: ONNX opset.

    Returns:
        the paths of the encoder and denoiser graphs.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    model._check_batch(batch, training=False)
    batch_dim = torch.export.Dim("batch", min=1)
    encoder_names = [name for name, _ in _encoder_inputs(model)]
    encoder_args = tuple(batch[key].float() for _, key in _encoder_inputs(model))
    encoder_path, denoiser_path = directory / ENCODER_FILE, directory / DENOISER_FILE
    with torch.no_grad():
        torch.onnx.export(_EncoderGraph(model).eval(), encoder_args, str(encoder_path), input_names=encoder_names,
                          output_names=_encoder_outputs(model), opset_version=opset, dynamo=True, verbose=False,
                          dynamic_shapes=(tuple({0: batch_dim} for _ in encoder_args),), external_data=False)
        fixed = model.encode_inputs(batch, fast=True)
        loop = model._sampling_loop(SamplerConfig(fast=True).resolved(model.config))
        size = encoder_args[0].shape[0]
        denoiser_args = (torch.zeros(size, model.config.trajectory_length, 9),
                         loop.network_timestep(0, size, "cpu").float(),
                         *(fixed[name] for name in _denoiser_fixed(model)))
        torch.onnx.export(_DenoiserGraph(model).eval(), denoiser_args, str(denoiser_path),
                          input_names=["trajectory", "timestep"] + _denoiser_fixed(model), output_names=["output"],
                          opset_version=opset, dynamo=True, verbose=False,
                          dynamic_shapes=({0: batch_dim}, {0: batch_dim}, tuple({0: batch_dim} for _ in denoiser_args[2:])),
                          external_data=False)
    for path in (encoder_path, denoiser_path):
        _check_dynamic_batch(path)
    return encoder_path, denoiser_path


def _check_dynamic_batch(path: Path) -> None:
    """Raise when a graph input came out with a fixed batch size (the exporter falls back to the
    example's shapes when the traced code turned the batch size into a constant)."""
    import onnx

    for graph_input in onnx.load(str(path)).graph.input:
        if not graph_input.type.tensor_type.shape.dim[0].dim_param:
            raise RuntimeError(f"{path.name}: input {graph_input.name!r} was exported with a fixed batch size; "
                               f"some code on its path reads the batch size as a Python int")


def available_providers(preferred: Sequence[str] = PREFERRED_PROVIDERS) -> list[str]:
    """``preferred`` execution providers that the installed onnxruntime offers, in that order."""
    import onnxruntime

    offered = set(onnxruntime.get_available_providers())
    return [name for name in preferred if name in offered]


class OnnxSystem1:
    """``predict_trajectory`` with the encoder and denoiser run by ONNX Runtime.

    The model supplies what is not in the graphs: input checks, farthest point sampling, the
    sampling loop (schedulers, noise, committed waypoints) and the conversion to absolute poses;
    its torch tensors stay on the CPU and cross to ONNX Runtime as numpy arrays.

    Args:
        model: the exported model (CPU), for its configuration, normalisation and loops.
        directory: holds the files :func:`export_system1` wrote.
        providers: ONNX Runtime execution providers; default :func:`available_providers`
            (TensorRT, CUDA, then CPU).
        threads: intra-op threads of each session; default ``torch.get_num_threads()``, so
            both runtimes use the same share of the CPU.
    """

    def __init__(self, model: DiffuserActor, directory: Union[str, Path], providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        import onnxruntime

        self.model = model
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # Idle ONNX Runtime threads spin by default; next to other nodes (and torch) on a few
        # cores that spinning takes the CPU they need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = list(providers or available_providers())
        directory = Path(directory)
        self.encoder = onnxruntime.InferenceSession(str(directory / ENCODER_FILE), options, providers=providers)
        self.denoiser = onnxruntime.InferenceSession(str(directory / DENOISER_FILE), options, providers=providers)
        self.providers = self.denoiser.get_providers()

    def predict_trajectory(self, batch: Mapping[str, torch.Tensor],
                           generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
                           committed: Optional[torch.Tensor] = None,
                           sampler: Optional[SamplerConfig] = None) -> torch.Tensor:
        """As :meth:`~.modeling_system1.DiffuserActor.predict_trajectory` (``sampler.fast`` is
        ignored: the graphs are the fast path) -> ``(B, T, 8)`` absolute waypoints."""
        model = self.model
        sampler = (sampler or model.sampler).resolved(model.config)
        model._check_batch(batch, training=False)
        with torch.inference_mode():
            feeds = {name: _array(batch[key]) for name, key in _encoder_inputs(model)}
            encoded = dict(zip(_encoder_outputs(model), self.encoder.run(None, feeds)))
            fps_feats, fps_pos = model.encoder.run_fps(torch.from_numpy(encoded["context_feats"]),
                                                       torch.from_numpy(encoded["context_pos"]))
            fixed = {name: encoded[name] for name in _denoiser_fixed(model) if name in encoded}
            fixed.update(fps_feats=fps_feats.numpy(), fps_pos=fps_pos.numpy())

            def make_denoiser(timesteps):
                def denoiser(trajectory: torch.Tensor, index: int) -> torch.Tensor:
                    feeds = {"trajectory": _array(trajectory), "timestep": _array(timesteps[index]), **fixed}
                    return torch.from_numpy(self.denoiser.run(None, feeds)[0])
                return denoiser

            return model.denoise(torch.from_numpy(encoded["current"]), make_denoiser, generator, committed, sampler)


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous float32 numpy array of a CPU tensor (the graphs' only input type)."""
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


__all__ = ["DENOISER_FILE", "ENCODER_FILE", "OnnxSystem1", "available_providers", "export_system1"]
