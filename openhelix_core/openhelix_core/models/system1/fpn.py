"""Feature pyramid network (Lin et al., 2017), written without torchvision.

Same computation and parameter layout as ``torchvision.ops.FeaturePyramidNetwork``
without extra blocks, which 3DDA builds as ``FeaturePyramidNetwork([64, 256, 512,
1024, 2048], embedding_dim)`` over the CLIP ResNet levels ``res1..res5``:

- a 1x1 lateral convolution per level (``inner_blocks.{i}.0``);
- top-down pathway: starting from the coarsest level, the running map is
  upsampled (nearest) to the next finer level and added to its lateral output;
- a 3x3 output convolution per level (``layer_blocks.{i}.0``).

``forward(features, levels=...)`` can skip the output convolutions of levels
that are not needed; the requested levels are unchanged by this (finer levels
never influence coarser ones).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn


class FeaturePyramidNetwork(nn.Module):
    """Top-down FPN mapping every level to ``out_channels``.

    Args:
        in_channels: channels of the input levels, finest first.
        out_channels: channels of every output level.
        names: level names, finest first (default ``res1..resN``).
    """

    def __init__(self, in_channels: list[int], out_channels: int,
                 names: Optional[list[str]] = None):
        super().__init__()
        self.names = list(names) if names is not None else [f"res{i + 1}" for i in range(len(in_channels))]
        if len(self.names) != len(in_channels):
            raise ValueError("FeaturePyramidNetwork: names and in_channels differ in length")
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: dict[str, torch.Tensor],
                levels: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
        """Args: ``features`` name -> ``(N, C_i, H_i, W_i)``; ``levels`` to output (default all).

        Returns: name -> ``(N, out_channels, H_i, W_i)`` for the requested levels.
        """
        wanted = set(self.names if levels is None else levels)
        unknown = wanted - set(self.names)
        if unknown:
            raise KeyError(f"FeaturePyramidNetwork: unknown level(s) {sorted(unknown)}")
        finest = min(self.names.index(name) for name in wanted)
        outputs: dict[str, torch.Tensor] = {}
        last = None
        for index in range(len(self.names) - 1, finest - 1, -1):
            name = self.names[index]
            lateral = self.inner_blocks[index](features[name])
            if last is None:
                last = lateral
            else:
                last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            if name in wanted:
                outputs[name] = self.layer_blocks[index](last)
        return {name: outputs[name] for name in self.names if name in outputs}
