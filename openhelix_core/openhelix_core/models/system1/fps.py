"""Farthest point sampling in pure torch.

3DDA samples scene tokens with ``dgl.geometry.farthest_point_sampler`` applied to
the *feature vectors* (not the xyz positions) in float64, starting at index 0
and keeping ``max(N // fps_subsampling_factor, 1)`` tokens
(``diffuser_actor/utils/encoder.py``, ``Encoder.run_fps``). Both functions here
follow DGL's semantics: squared Euclidean distance, the first pick is
``start_index``, each next pick is the point whose distance to the picked set is
largest (ties -> lowest index).

- :func:`farthest_point_sample_reference`: the textbook loop (distance from the
  newest pick to all points, recomputed every iteration).
- :func:`farthest_point_sample`: the same loop on a precomputed squared-distance
  matrix (one matmul), so each iteration is only a gather and a minimum (in numpy on
  CPU, where torch's per-call overhead would dominate these small steps). It picks
  the same indices except where distances tie to within float64 rounding.
"""
from __future__ import annotations

import numpy as np
import torch


def _check(points: torch.Tensor, num_samples: int, start_index: int) -> None:
    if points.dim() != 3:
        raise ValueError(f"farthest point sampling expects (B, N, D), got {tuple(points.shape)}")
    n = points.shape[1]
    if not 1 <= num_samples <= n:
        raise ValueError(f"num_samples must be in [1, {n}], got {num_samples}")
    if not 0 <= start_index < n:
        raise ValueError(f"start_index must be in [0, {n}), got {start_index}")


@torch.no_grad()
def farthest_point_sample_reference(points: torch.Tensor, num_samples: int,
                                    start_index: int = 0) -> torch.Tensor:
    """``(B, N, D)`` points -> ``(B, num_samples)`` long indices (straightforward loop)."""
    _check(points, num_samples, start_index)
    x = points.to(torch.float64)
    batch, n, _ = x.shape
    arange = torch.arange(batch, device=x.device)
    indices = torch.empty(batch, num_samples, dtype=torch.long, device=x.device)
    min_dist = torch.full((batch, n), float("inf"), dtype=torch.float64, device=x.device)
    current = torch.full((batch,), start_index, dtype=torch.long, device=x.device)
    for i in range(num_samples):
        indices[:, i] = current
        newest = x[arange, current]  # (B, D)
        dist = ((x - newest[:, None, :]) ** 2).sum(-1)
        min_dist = torch.minimum(min_dist, dist)
        current = min_dist.argmax(dim=-1)
    return indices


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, num_samples: int,
                          start_index: int = 0) -> torch.Tensor:
    """``(B, N, D)`` points -> ``(B, num_samples)`` long indices (precomputed distances)."""
    _check(points, num_samples, start_index)
    x = points.to(torch.float64)
    batch, n, _ = x.shape
    sq = (x * x).sum(-1)
    dist = (sq[:, :, None] + sq[:, None, :] - 2.0 * torch.bmm(x, x.transpose(1, 2))).clamp_min_(0.0)
    dist.diagonal(dim1=1, dim2=2).zero_()
    if x.device.type == "cpu":
        # The loop is hundreds of tiny steps: numpy's per-call cost is a fraction of torch's.
        return torch.from_numpy(_greedy_farthest(dist.numpy(), num_samples, start_index))
    indices = torch.empty(batch, num_samples, dtype=torch.long, device=x.device)
    current = torch.full((batch, 1, 1), start_index, dtype=torch.long, device=x.device)
    min_dist = torch.gather(dist, 1, current.expand(batch, 1, n)).squeeze(1)
    indices[:, 0] = start_index
    for i in range(1, num_samples):
        nxt = min_dist.argmax(dim=-1)
        indices[:, i] = nxt
        row = torch.gather(dist, 1, nxt.view(batch, 1, 1).expand(batch, 1, n)).squeeze(1)
        torch.minimum(min_dist, row, out=min_dist)
    return indices


def _greedy_farthest(dist: np.ndarray, num_samples: int, start_index: int) -> np.ndarray:
    """The selection loop on a ``(B, N, N)`` squared-distance array -> ``(B, num_samples)`` int64
    (``argmax`` returns the first maximum, as torch's does)."""
    batch = dist.shape[0]
    indices = np.empty((batch, num_samples), dtype=np.int64)
    for b in range(batch):
        rows = dist[b]
        min_dist = rows[start_index].copy()
        indices[b, 0] = start_index
        for i in range(1, num_samples):
            nxt = int(min_dist.argmax())
            indices[b, i] = nxt
            np.minimum(min_dist, rows[nxt], out=min_dist)
    return indices


__all__ = ["farthest_point_sample", "farthest_point_sample_reference"]
