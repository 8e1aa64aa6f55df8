"""Attention building blocks of 3D Diffuser Actor, batch-first.

Module and parameter names follow nickgkan/3d_diffuser_actor
(``diffuser_actor/utils/layers.py``, ``multihead_custom_attention.py``,
``position_encodings.py``) so original checkpoints load by name; the code is an
independent implementation. All sequences here are ``(B, N, F)`` (the original
is sequence-first); rotary position codes are ``(B, N, F, 2)`` holding
``(cos, sin)``.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """``(N,)`` scalars -> ``(N, dim)`` embedding ``[sin(x w_k), cos(x w_k)]``,
    ``w_k = 10000^(-k / (dim/2 - 1))``, ``k = 0 .. dim/2 - 1``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = math.log(10000) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -scale)
        angles = x.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class RotaryPositionEncoding3D(nn.Module):
    """3-D rotary position code (3DDA ``RotaryPositionEncoding3D``).

    ``(B, N, 3)`` positions -> ``(B, N, F, 2)`` with ``[..., 0] = cos`` and
    ``[..., 1] = sin``. The feature axis is split in three equal parts for x, y, z;
    each part uses frequencies ``10000^(-2j / (F/3))`` repeated twice (pairs of
    channels are rotated together).
    """

    def __init__(self, feature_dim: int):
        super().__init__()
        if feature_dim % 6 != 0:
            raise ValueError(f"RotaryPositionEncoding3D needs feature_dim divisible by 6, got {feature_dim}")
        self.feature_dim = feature_dim

    @torch.no_grad()
    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        batch, npoint, _ = xyz.shape
        part = self.feature_dim // 3
        div_term = torch.exp(torch.arange(0, part, 2, dtype=torch.float32, device=xyz.device)
                             * (-math.log(10000.0) / part)).view(1, 1, -1)
        cos_parts, sin_parts = [], []
        for axis in range(3):
            angle = xyz[..., axis:axis + 1].float() * div_term  # (B, N, part/2)
            angle = angle.repeat_interleave(2, dim=-1)  # (B, N, part): pairs share a frequency
            cos_parts.append(torch.cos(angle))
            sin_parts.append(torch.sin(angle))
        return torch.stack([torch.cat(cos_parts, -1), torch.cat(sin_parts, -1)], dim=-1)


def apply_rotary(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x_{2i}, x_{2i+1})`` of ``(B, N, F)`` by the ``(B, N, F, 2)`` code."""
    cos, sin = code[..., 0].to(x.dtype), code[..., 1].to(x.dtype)
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).reshape_as(x)
    return x * cos + rotated * sin


class MultiheadRelativeAttention(nn.Module):
    """Multi-head attention with optional rotary relative positions on queries and keys.

    Parameters are named like ``torch.nn.MultiheadAttention`` / 3DDA's
    ``MultiheadCustomAttention``: ``in_proj_weight (3F, F)``, ``in_proj_bias (3F,)``,
    ``out_proj``. Rotary codes are applied to the projected queries and keys over
    the full width before splitting heads, as in 3DDA.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                query_pos: Optional[torch.Tensor] = None,
                key_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``query (B, Lq, F)``, ``key``/``value (B, Lk, F)``, codes ``(B, L, F, 2)`` -> ``(B, Lq, F)``."""
        return self.attend(query, self.project_key_value(key, value, key_pos), query_pos)

    def project_key_value(self, key: torch.Tensor, value: torch.Tensor,
                          key_pos: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (rotated by ``key_pos`` when given) and values, split into heads: two
        ``(B, heads, Lk, F / heads)``. Reusable across queries (the fast sampler projects a
        call's scene tokens once for all its denoising steps)."""
        _, w_k, w_v = self.in_proj_weight.chunk(3, dim=0)
        _, b_k, b_v = self.in_proj_bias.chunk(3, dim=0)
        k = F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v)
        if key_pos is not None:
            k = apply_rotary(k, key_pos)
        batch, _, width = k.shape
        head = width // self.num_heads
        k = k.view(batch, -1, self.num_heads, head).transpose(1, 2)
        v = v.view(batch, -1, self.num_heads, head).transpose(1, 2)
        return k, v

    def attend(self, query: torch.Tensor, key_value: tuple[torch.Tensor, torch.Tensor],
               query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``query (B, Lq, F)`` attends to projected :meth:`project_key_value` -> ``(B, Lq, F)``."""
        w_q, _, _ = self.in_proj_weight.chunk(3, dim=0)
        b_q, _, _ = self.in_proj_bias.chunk(3, dim=0)
        q = F.linear(query, w_q, b_q)
        if query_pos is not None:
            q = apply_rotary(q, query_pos)
        batch, len_q, width = q.shape
        q = q.view(batch, len_q, self.num_heads, width // self.num_heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, *key_value, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, len_q, width)
        return self.out_proj(out)

    def single_key_output(self, value: torch.Tensor) -> torch.Tensor:
        """Output for any query when ``value (B, 1, F)`` is the only key: softmax over one key
        is exactly 1, so attention returns that key's projected value whatever the query (and
        the query's projection and rotary code are not needed) -> ``(B, 1, F)``."""
        _, _, w_v = self.in_proj_weight.chunk(3, dim=0)
        _, _, b_v = self.in_proj_bias.chunk(3, dim=0)
        return self.out_proj(F.linear(value, w_v, b_v))


class AdaLN(nn.Module):
    """Adaptive LayerNorm-style modulation ``x (1 + scale(t)) + shift(t)``, zero-initialised."""

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, 2 * embedding_dim))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x (B, N, F)``, ``t (B, F)`` -> ``(B, N, F)``."""
        scale, shift = self.modulation(t).chunk(2, dim=-1)
        return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class FeedforwardLayer(nn.Module):
    """Post-norm residual MLP ``norm(x + W2 relu(W1 x))``, optionally AdaLN-modulated input."""

    def __init__(self, embedding_dim: int, hidden_dim: int, dropout: float = 0.0,
                 use_adaln: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(embedding_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden_dim, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if use_adaln:
            self.adaln = AdaLN(embedding_dim)

    def forward(self, x: torch.Tensor, diff_ts: Optional[torch.Tensor] = None) -> torch.Tensor:
        if diff_ts is not None:
            x = self.adaln(x, diff_ts)
        out = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.dropout(out))


class RelativeCrossAttentionLayer(nn.Module):
    """``norm(query + attn(adaln(query), value))`` with rotary relative positions."""

    def __init__(self, embedding_dim: int, num_heads: int, dropout: float = 0.0,
                 use_adaln: bool = False):
        super().__init__()
        self.multihead_attn = MultiheadRelativeAttention(embedding_dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(embedding_dim)
        self.dropout = nn.Dropout(dropout)
        if use_adaln:
            self.adaln = AdaLN(embedding_dim)

    def forward(self, query: torch.Tensor, value: torch.Tensor,
                diff_ts: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None,
                value_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        modulated = self.adaln(query, diff_ts) if diff_ts is not None else query
        attended = self.multihead_attn(modulated, value, value, query_pos, value_pos)
        return self.norm(query + self.dropout(attended))


class FFWRelativeCrossAttentionModule(nn.Module):
    """Stack of (relative cross-attention, feed-forward) layers; queries attend to ``value``."""

    def __init__(self, embedding_dim: int, num_attn_heads: int, num_layers: int,
                 use_adaln: bool = True):
        super().__init__()
        self.num_layers = num_layers
        self.attn_layers = nn.ModuleList(
            RelativeCrossAttentionLayer(embedding_dim, num_attn_heads, use_adaln=use_adaln)
            for _ in range(num_layers))
        self.ffw_layers = nn.ModuleList(
            FeedforwardLayer(embedding_dim, embedding_dim, use_adaln=use_adaln)
            for _ in range(num_layers))

    def forward(self, query, value, diff_ts=None, query_pos=None, value_pos=None) -> torch.Tensor:
        """``query (B, Nq, F)``, ``value (B, Nv, F)`` -> ``(B, Nq, F)`` (last layer)."""
        for attn, ffw in zip(self.attn_layers, self.ffw_layers):
            query = attn(query, value, diff_ts, query_pos, value_pos)
            query = ffw(query, diff_ts)
        return query


class FFWRelativeSelfAttentionModule(nn.Module):
    """Stack of (relative self-attention, feed-forward) layers."""

    def __init__(self, embedding_dim: int, num_attn_heads: int, num_layers: int,
                 use_adaln: bool = True):
        super().__init__()
        self.num_layers = num_layers
        self.attn_layers = nn.ModuleList(
            RelativeCrossAttentionLayer(embedding_dim, num_attn_heads, use_adaln=use_adaln)
            for _ in range(num_layers))
        self.ffw_layers = nn.ModuleList(
            FeedforwardLayer(embedding_dim, embedding_dim, use_adaln=use_adaln)
            for _ in range(num_layers))

    def forward(self, query, diff_ts=None, query_pos=None, context=None, context_pos=None):
        for attn, ffw in zip(self.attn_layers, self.ffw_layers):
            query = attn(query, query, diff_ts, query_pos, query_pos)
            query = ffw(query, diff_ts)
        return query


class FFWRelativeSelfCrossAttentionModule(nn.Module):
    """Self-attention stack with cross-attention to a context (the goal) interleaved.

    Cross-attention layers sit before self-attention layer ``i`` for ``i`` in
    ``int(linspace(0, num_self, num_cross + 1))`` (3DDA); e.g. 4 self / 3 cross ->
    before layers 0, 1, 2; 2 self / 1 cross -> before layer 0. Cross-attention
    uses no positional code (the goal tokens have no 3-D position).
    """

    def __init__(self, embedding_dim: int, num_attn_heads: int, num_self_attn_layers: int,
                 num_cross_attn_layers: int, use_adaln: bool = True):
        super().__init__()
        self.num_layers = num_self_attn_layers
        cross_at = set(np.linspace(0, num_self_attn_layers, num_cross_attn_layers + 1,
                                   dtype=np.int32).tolist()) if num_cross_attn_layers > 0 else set()
        self.self_attn_layers = nn.ModuleList()
        self.cross_attn_layers = nn.ModuleList()
        self.ffw_layers = nn.ModuleList()
        for index in range(num_self_attn_layers):
            self.self_attn_layers.append(
                RelativeCrossAttentionLayer(embedding_dim, num_attn_heads, use_adaln=use_adaln))
            self.cross_attn_layers.append(
                RelativeCrossAttentionLayer(embedding_dim, num_attn_heads, use_adaln=use_adaln)
                if index in cross_at else None)
            self.ffw_layers.append(FeedforwardLayer(embedding_dim, embedding_dim, use_adaln=use_adaln))

    def forward(self, query, context, diff_ts=None, query_pos=None, context_pos=None):
        """``query (B, N, F)``, ``context (B, L, F)`` -> ``(B, N, F)``."""
        for index in range(self.num_layers):
            cross = self.cross_attn_layers[index]
            if cross is not None:
                query = cross(query, context, diff_ts,
                              None if context_pos is None else query_pos, context_pos)
            query = self.self_attn_layers[index](query, query, diff_ts, query_pos, query_pos)
            query = self.ffw_layers[index](query, diff_ts)
        return query


class ParallelCrossAttentionLayer(nn.Module):
    """3DDA ``ParallelAttentionLayer`` restricted to what 3DDA uses: seq1 -> seq2 cross-attention.

    ``seq1 = norm_12(seq1 + drop(attn(seq1 + sem_pos1, seq2)))``, then if ``apply_ffn``
    ``seq1 = norm_122(seq1 + ffn_12(seq1))`` (post-norm, no AdaLN, no rotary).
    ``ffn_12``/``norm_122`` exist even when ``apply_ffn`` is False, as in 3DDA.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.1, apply_ffn: bool = True):
        super().__init__()
        self.apply_ffn = apply_ffn
        self.cross_12 = MultiheadRelativeAttention(d_model, n_heads, dropout=dropout)
        self.dropout_12 = nn.Dropout(dropout)
        self.norm_12 = nn.LayerNorm(d_model)
        self.ffn_12 = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))
        self.norm_122 = nn.LayerNorm(d_model)

    def forward(self, seq1: torch.Tensor, seq2: torch.Tensor,
                seq1_sem_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        query = seq1 if seq1_sem_pos is None else seq1 + seq1_sem_pos
        seq1 = self.norm_12(seq1 + self.dropout_12(self.cross_12(query, seq2, seq2)))
        if self.apply_ffn:
            seq1 = self.norm_122(seq1 + self.ffn_12(seq1))
        return seq1


class ParallelAttention(nn.Module):
    """Stack of :class:`ParallelCrossAttentionLayer` (3DDA ``ParallelAttention``, cross only)."""

    def __init__(self, num_layers: int, d_model: int, n_heads: int, dropout: float = 0.1,
                 apply_ffn: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(
            ParallelCrossAttentionLayer(d_model, n_heads, dropout, apply_ffn) for _ in range(num_layers))

    def forward(self, seq1, seq2, seq1_sem_pos=None) -> torch.Tensor:
        """``seq1 (B, N, F)`` attends to ``seq2 (B, L, F)`` -> ``(B, N, F)``."""
        for layer in self.layers:
            seq1 = layer(seq1, seq2, seq1_sem_pos)
        return seq1
