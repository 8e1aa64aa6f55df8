"""CLIP's modified ResNet as a multi-scale feature extractor (no attention pool).

Architecture of CLIP's ``ModifiedResNet`` (openai/CLIP ``clip/model.py``), as
wrapped by 3DDA's ``ModifiedResNetFeatures`` (``diffuser_actor/utils/clip.py``):

- stem of three 3x3 convolutions (stride 2 on the first; widths ``w/2, w/2, w``),
  each followed by BatchNorm and ReLU, then a 2x2 average pool;
- four stages of bottleneck blocks; strided blocks downsample with an average
  pool (anti-aliasing) after the 3x3 convolution instead of a strided conv, and
  their shortcut is ``AvgPool -> 1x1 conv -> BatchNorm``;
- the attention pool that produces CLIP's image embedding is not built (3DDA
  never calls it; :func:`~.modeling_system1.convert_original_state_dict` drops
  its weights).

Outputs (for an input of side ``S``, ``w = width``):
``res1`` (w, S/2), ``res2`` (4w, S/4), ``res3`` (8w, S/8), ``res4`` (16w, S/16),
``res5`` (32w, S/32). Parameter names equal CLIP's ``visual.*`` names so that
CLIP RN50 / 3DDA checkpoints load directly.

Images are normalised inside :meth:`CLIPResNetFeatures.normalize` with CLIP's
constants (``clip.load(...)`` transform ``Normalize``).
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: CLIP image normalisation (openai/CLIP ``_transform``), RGB in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def attnpool_parameter_count(width: int = 64, input_resolution: int = 224, output_dim: int = 1024) -> int:
    """Parameters of CLIP's ``AttentionPool2d`` head, which this module does not build.

    ``embed = 32 * width`` channels on a ``(input_resolution / 32)^2`` grid: positional
    embedding ``(grid + 1, embed)``, ``q/k/v`` projections ``embed -> embed`` and ``c_proj``
    ``embed -> output_dim``, all with biases. RN50 (64, 224, 1024): 14,789,632.
    """
    embed = width * 32
    grid = (input_resolution // 32) ** 2
    return (grid + 1) * embed + 3 * (embed * embed + embed) + embed * output_dim + output_dim


class Bottleneck(nn.Module):
    """CLIP bottleneck: 1x1 -> 3x3 -> avgpool(stride) -> 1x1 (x4), with anti-aliased shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class CLIPResNetFeatures(nn.Module):
    """CLIP modified ResNet returning the feature pyramid ``{"res1": ..., "res5": ...}``.

    Args:
        layers: bottleneck blocks per stage, ``(3, 4, 6, 3)`` for RN50.
        width: stem width, 64 for RN50.
    """

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64):
        super().__init__()
        if width % 2 != 0:
            raise ValueError(f"CLIP ResNet width must be even, got {width}")
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.out_channels = {
            "res1": width, "res2": width * 4, "res3": width * 8,
            "res4": width * 16, "res5": width * 32,
        }
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        modules = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        modules += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB in [0, 1] -> CLIP-normalised input."""
        return (rgb - self.pixel_mean) / self.pixel_std

    def with_batch_norm_folded(self) -> "CLIPResNetFeatures":
        """A copy for inference whose convolutions absorb the BatchNorm that follows them
        (running statistics and affine parameters become the convolution's weight and bias;
        the BatchNorm becomes an identity). Same outputs to float rounding, without the
        separate normalisation passes over every feature map."""
        folded = copy.deepcopy(self).eval()
        for module in folded.modules():
            for index in (1, 2, 3):
                conv, norm = getattr(module, f"conv{index}", None), getattr(module, f"bn{index}", None)
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    setattr(module, f"conv{index}", fuse_conv_bn_eval(conv, norm))
                    setattr(module, f"bn{index}", nn.Identity())
            shortcut = getattr(module, "downsample", None)
            if isinstance(shortcut, nn.Sequential) and isinstance(getattr(shortcut, "1", None), nn.BatchNorm2d):
                setattr(shortcut, "0", fuse_conv_bn_eval(getattr(shortcut, "0"), getattr(shortcut, "1")))
                setattr(shortcut, "1", nn.Identity())
        return folded.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` normalised images -> dict of ``(N, C_l, H/s_l, W/s_l)`` maps."""
        x = x.to(self.conv1.weight.dtype)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        res1 = self.relu3(self.bn3(self.conv3(x)))
        res2 = self.layer1(self.avgpool(res1))
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return {"res1": res1, "res2": res2, "res3": res3, "res4": res4, "res5": res5}
