"""System 2 of OpenHelix: a frozen LLaVA read out at one learnable ``<ACT>`` token.

Data flow of :meth:`System2Planner.forward` (B prompts, L tokens, H = LLaVA hidden size):

1. the frozen input-embedding table embeds the prompt tokens; the image placeholders get
   the LLaVA's projected CLIP features, and the ``<ACT>`` position gets
   :attr:`System2Planner.act_embedding`, a separate ``nn.Parameter`` of shape ``(H,)``
   spliced into ``inputs_embeds`` (so the embedding table itself is never touched and
   the only embedding that learns is the ``<ACT>`` row);
2. the frozen language model runs over the sequence (no LM head, nothing is generated);
3. its last-layer (post-norm) hidden state at ``<ACT>`` goes through a linear projection
   to the ``goal_dim`` goal, and through the auxiliary head (linear -> activation ->
   position (3), 6-D rotation (6), gripper logit (1)).

Trainable: ``act_embedding``, ``projection``, ``aux_head``. Every LLaVA weight has
``requires_grad=False`` and the LLaVA stays in eval mode.

Fast paths, each beside the reference above: with ``config.prefix_cache`` (the default) step 2
starts from the cached key/values of the prompt tokens before the image, which are the same
for every call, and runs on the image, question and ``<ACT>`` only (same goal to float
rounding; ``forward(..., use_prefix_cache=False)`` is the reference). On CPU,
``config.quantization="int8_dynamic"`` (or :meth:`System2Planner.quantize_int8`) runs the
language model's Linear layers in int8, at a goal deviation ``benchmarks/bench_system2.py
--int8`` reports. On a GPU: ``torch_dtype="bfloat16"`` with ``attn_implementation="auto"``
(flash-attention 2 when importable, else sdpa); ``benchmarks/gpu_system2.sh`` times it.

Facts reproduced from OpenHelix-robot/OpenHelix: ``planer_utils.py`` (``Model_init``:
``<ACT>`` added to the tokenizer, out_dim 512, LLaVA in bfloat16; trainable modules
``text_hidden_fcs``, ``pred_act_mlps``, ``pred_pos_act``, ``pred_rot_act``,
``pred_gripper_act``), its planner module (``text_hidden_fcs`` = one
``Linear(hidden, 512)`` on the last hidden state; ``pred_act_mlps`` =
``Linear(hidden, hidden // 2)`` feeding position 3 / rotation 6 / gripper 1 heads without a
nonlinearity; the ``<ACT>`` id hard-coded as 32003) and ``engine_act_simple.py`` (the
planner saved as ``pytorch_model.bin`` = full ``state_dict``).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint_keys import CheckpointError, KeyMapping, strip_wrapper_prefixes
from .configuration_system2 import System2Config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "system2_trainable.safetensors"
FORMAT_NAME = "openhelix_system2"
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------- outputs
@dataclass
class System2Output:
    """Result of one System 2 call (B = batch size, H = LLaVA hidden size).

    Attributes:
        goal: ``(B, goal_dim)`` float32 goal vector for System 1.
        act_hidden_state: ``(B, H)`` float32 last-layer hidden state at ``<ACT>``.
        aux_position: ``(B, 3)`` auxiliary end-effector position prediction.
        aux_rotation_6d: ``(B, 6)`` auxiliary rotation prediction (two matrix columns).
        aux_gripper_logit: ``(B, 1)`` auxiliary gripper logit (sigmoid -> openness).
    """

    goal: torch.Tensor
    act_hidden_state: torch.Tensor
    aux_position: torch.Tensor
    aux_rotation_6d: torch.Tensor
    aux_gripper_logit: torch.Tensor


class AuxHead(nn.Module):
    """``trunk`` Linear(H, W) -> activation -> ``position`` (3), ``rotation`` (6), ``gripper`` (1)."""

    def __init__(self, hidden_size: int, width: int, activation: str) -> None:
        super().__init__()
        self.trunk = nn.Linear(hidden_size, width)
        self.activation = {"gelu": nn.GELU(), "relu": nn.ReLU(), "identity": nn.Identity()}[activation]
        self.position = nn.Linear(width, 3)
        self.rotation = nn.Linear(width, 6)
        self.gripper = nn.Linear(width, 1)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.activation(self.trunk(hidden))
        return self.position(features), self.rotation(features), self.gripper(features)


# ---------------------------------------------------------------------------- helpers
def resolve_attn_implementation(requested: str, device: torch.device | str | None, dtype: torch.dtype) -> str:
    """``auto`` -> ``flash_attention_2`` if flash_attn is importable, the model goes to a
    CUDA device and runs in half precision; ``sdpa`` otherwise. Explicit values pass."""
    if requested != "auto":
        return requested
    on_gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if has_flash and on_gpu and dtype in (torch.float16, torch.bfloat16):
        return "flash_attention_2"
    return "sdpa"


@dataclass(frozen=True)
class _PrefixSplit:
    """How a batch splits into the shared prompt prefix and the rest (B rows, T = length of
    the rest, including right padding added so rows line up).

    Attributes:
        prefix_ids: the P token ids every row starts with (all before the image).
        index: ``(B, T)`` column in ``input_ids`` of each token after the prefix.
        mask: ``(B, T)`` 1 for a real token, 0 for padding.
        act_index: ``(B,)`` position of ``<ACT>`` within the T tokens.
    """

    prefix_ids: tuple[int, ...]
    index: torch.Tensor
    mask: torch.Tensor
    act_index: torch.Tensor


def _split_at_image(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_mask: torch.Tensor,
    act_positions: torch.Tensor,
) -> _PrefixSplit | None:
    """Split ``(B, L)`` prompts before their first image token, or ``None`` when the batch
    has no prefix that can be computed once: rows whose real tokens before the image differ
    or hold padding, an empty prefix, or an ``<ACT>`` before the image.

    Rows are realigned so each one's tokens after the prefix start at column 0 (left padding
    moves behind them): with a causal mask, padding after ``<ACT>`` cannot change it.
    """
    batch, length = input_ids.shape
    device = input_ids.device
    first_real = attention_mask.argmax(dim=1)
    first_image = image_mask.long().argmax(dim=1)
    prefix_lengths = first_image - first_real
    prefix_length = int(prefix_lengths[0])
    if prefix_length == 0:
        return None
    # Clamped: rows with a longer lead than row 0 are rejected below, but must gather safely first.
    prefix_index = (first_real.unsqueeze(1) + torch.arange(prefix_length, device=device)).clamp(max=length - 1)
    prefix_ids = input_ids.gather(1, prefix_index)
    shareable = (
        (prefix_lengths == prefix_length).all()
        & (act_positions > first_image).all()
        & attention_mask.gather(1, prefix_index).bool().all()
        & (prefix_ids == prefix_ids[:1]).all()
    )
    if not bool(shareable):
        return None
    rest = length - int(first_image.min())
    index = first_image.unsqueeze(1) + torch.arange(rest, device=device)
    inside = index < length
    index = index.clamp(max=length - 1)
    return _PrefixSplit(
        prefix_ids=tuple(prefix_ids[0].tolist()),
        index=index,
        mask=attention_mask.gather(1, index) * inside,
        act_index=act_positions - first_image,
    )


def quantize_language_model_int8(llava) -> None:
    """Replace every ``nn.Linear`` of ``llava``'s language model, in place, by an int8
    dynamically quantized one (int8 weights per tensor; activations quantized per call).

    The vision tower and projector stay float32: they are a small share of the time, and
    the image features are what the goal is read from. ``torch.ao.quantization`` is
    deprecated upstream in favour of torchao, but in torch 2.13 it is still the one int8
    path with fast CPU kernels (fbgemm/onednn): ``torch._int_mm`` on CPU, which torchao's
    dynamic int8 relies on, was ~100x slower than a float32 matmul here. Its deprecation
    warnings are silenced for this call only.

    Raises:
        RuntimeError: the LLaVA is not on CPU or not float32.
    """
    import warnings

    language_model = llava.model.language_model
    parameter = next(language_model.parameters())
    if parameter.device.type != "cpu":
        raise RuntimeError(
            f"int8 dynamic quantization runs on CPU only, but the LLaVA is on {parameter.device}; "
            "on a GPU use torch_dtype='bfloat16'"
        )
    if parameter.dtype != torch.float32:
        raise RuntimeError(f"int8 dynamic quantization needs a float32 LLaVA, got {parameter.dtype}")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.* are deprecated")
        quantize_dynamic(language_model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def _require_dir(path: str | os.PathLike, what: str) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{what} {str(directory)!r} is not an existing local directory")
    return directory


def resolve_llava_config(config: System2Config):
    """The ``LlavaConfig`` the planner will use: from ``llava_path`` when set (local files
    only), else built from ``config.llava_config``."""
    from transformers import AutoConfig, LlavaConfig

    if config.llava_path is not None:
        directory = _require_dir(config.llava_path, "llava_path")
        return AutoConfig.from_pretrained(str(directory), local_files_only=True)
    return LlavaConfig(**config.llava_config)


def _check_llava_against_config(llava_config, config: System2Config) -> None:
    """When the config spells an expected architecture, make sure the LLaVA matches it."""
    vision = llava_config.vision_config
    if getattr(vision, "image_size", config.image_size) != config.image_size:
        raise ValueError(
            f"image_size={config.image_size} but the LLaVA vision tower reads {vision.image_size} px images"
        )
    if config.llava_config is None:
        return
    expected = config.llava_config
    hidden = expected["text_config"].get("hidden_size")
    if hidden is not None and hidden != llava_config.text_config.hidden_size:
        raise ValueError(
            f"llava_config expects hidden size {hidden} but the LLaVA has "
            f"{llava_config.text_config.hidden_size}"
        )
    patch = expected["vision_config"].get("patch_size")
    if patch is not None and patch != vision.patch_size:
        raise ValueError(f"llava_config expects patch size {patch} but the LLaVA uses {vision.patch_size}")


def build_llava(config: System2Config, device: torch.device | str | None = None):
    """The frozen ``LlavaForConditionalGeneration``: loaded from ``llava_path`` (local
    files only, never a hub download) or built with seeded random weights."""
    from transformers import LlavaForConditionalGeneration

    dtype = _DTYPES[config.torch_dtype]
    attn = resolve_attn_implementation(config.attn_implementation, device, dtype)
    if config.llava_path is not None:
        directory = _require_dir(config.llava_path, "llava_path")
        _check_llava_against_config(resolve_llava_config(config), config)  # before reading weights
        llava = LlavaForConditionalGeneration.from_pretrained(
            str(directory), local_files_only=True, dtype=dtype, attn_implementation=attn
        )
    else:
        llava_config = resolve_llava_config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            llava = LlavaForConditionalGeneration._from_config(
                llava_config, attn_implementation=attn, dtype=dtype
            )
    _check_llava_against_config(llava.config, config)
    if device is not None:
        llava = llava.to(device)
    return llava


def load_tokenizer(config: System2Config):
    """Tokenizer matching the LLaVA, with ``act_token`` added if absent.

    ``llava_path`` set: the folder's sentencepiece ``tokenizer.model`` through
    :class:`~.tokenization_system2.LlamaSentencePieceTokenizer`, which gives the token ids
    OpenHelix and LLaVA trained with; a folder without one falls back to ``AutoTokenizer``
    (local files only), whose ids may differ, with a warning. Otherwise: the in-code
    byte-level tiny tokenizer.
    """
    if config.llava_path is not None:
        from .tokenization_system2 import LlamaSentencePieceTokenizer, has_sentencepiece_model

        directory = _require_dir(config.llava_path, "llava_path")
        if has_sentencepiece_model(directory):
            tokenizer = LlamaSentencePieceTokenizer.from_directory(directory, padding_side=config.padding_side)
        else:
            from transformers import AutoTokenizer

            logger.warning("%s has no tokenizer.model: using AutoTokenizer, whose token ids may differ from the "
                           "slow LLaMA tokenizer System 2 was trained with", directory)
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    else:
        from .tiny_tokenizer import build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(padding_side=config.padding_side)
    return ensure_act_token(tokenizer, config.act_token)


def ensure_act_token(tokenizer, act_token: str):
    """Add ``act_token`` to ``tokenizer`` unless it is already one token. As OpenHelix adds
    it (a plain added token), the spaces next to it do not become tokens of their own."""
    from .tokenization_system2 import LlamaSentencePieceTokenizer

    ids = tokenizer.encode(act_token, add_special_tokens=False)
    if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
        return tokenizer
    if isinstance(tokenizer, LlamaSentencePieceTokenizer):
        tokenizer.add_tokens(act_token)
    else:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(act_token, special=True, normalized=False, lstrip=True, rstrip=True)],
                             special_tokens=True)
    return tokenizer


def reserved_token_texts(tokenizer) -> set[str]:
    """Texts an instruction must not contain: the tokenizer's special and added tokens."""
    return set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())


def token_id(tokenizer, token: str) -> int:
    """Id of a token that must encode to exactly one id."""
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"token {token!r} is not a single token in the tokenizer (ids {ids})")
    return int(ids[0])


# ---------------------------------------------------------------------------- the planner
class System2Planner(nn.Module):
    """Frozen LLaVA + learnable ``<ACT>`` embedding + goal projection + auxiliary head.

    Args:
        config: the :class:`System2Config`.
        llava: an already built ``LlavaForConditionalGeneration``; built from ``config``
            when ``None``. It is frozen (``requires_grad_(False)``, eval mode) either way.
        tokenizer: tokenizer matching the LLaVA; loaded from ``config`` when ``None``.
            ``config.act_token`` is added to it when missing.
        device: where to build the model (also decides ``attn_implementation="auto"``).
    """

    def __init__(self, config: System2Config, llava=None, tokenizer=None, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not isinstance(config, System2Config):
            raise TypeError(f"config must be a System2Config, got {type(config).__name__}")
        if config.quantization != "none" and device is not None and torch.device(device).type != "cpu":
            # Refused before a multi-GB LLaVA is built for nothing.
            raise ValueError(f"quantization={config.quantization!r} runs on CPU only, but device={str(device)!r}; "
                             "on a GPU use torch_dtype='bfloat16'")
        self.config = config
        #: ``(key, per-layer key/values)`` of the prompt prefix; see :meth:`prefix_key_values`.
        self._prefix_cache: tuple[tuple, tuple[tuple[torch.Tensor, torch.Tensor], ...]] | None = None
        if llava is None:
            llava = build_llava(config, device=device)
        else:
            _check_llava_against_config(llava.config, config)
        if tokenizer is None:
            tokenizer = load_tokenizer(config)
        else:
            tokenizer = ensure_act_token(tokenizer, config.act_token)
        llava.requires_grad_(False)
        llava.eval()
        self.llava = llava
        self.tokenizer = tokenizer

        llava_config = llava.config
        text_config = llava_config.text_config
        self.hidden_size = int(text_config.hidden_size)
        self.act_token_id = token_id(tokenizer, config.act_token)
        self.image_token_id = token_id(tokenizer, config.image_token)
        if self.image_token_id != llava_config.image_token_index:
            raise ValueError(
                f"tokenizer maps {config.image_token!r} to id {self.image_token_id} but the LLaVA "
                f"expects image_token_index={llava_config.image_token_index}"
            )
        # Every id the LLaVA embeds must be in its table (<ACT> and <image> are spliced in).
        spliced = {self.act_token_id, self.image_token_id}
        largest = next(i for i in range(len(tokenizer) - 1, -2, -1) if i not in spliced)
        if largest >= text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the LLaVA embeds only {text_config.vocab_size}"
            )
        vision = llava_config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        self.num_image_tokens = patches + (0 if llava_config.vision_feature_select_strategy == "default" else 1)

        embedding = llava.get_input_embeddings().weight
        width = config.aux_hidden_dim if config.aux_hidden_dim is not None else self.hidden_size // 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            if config.act_init == "mean":
                act = embedding.detach().float().mean(dim=0).clone()
            else:
                act = torch.randn(self.hidden_size) * embedding.detach().float().std()
            self.act_embedding = nn.Parameter(act.to(embedding.device))
            self.projection = nn.Linear(self.hidden_size, config.goal_dim, device=embedding.device)
            self.aux_head = AuxHead(self.hidden_size, width, config.aux_activation).to(embedding.device)
        if config.quantization == "int8_dynamic":
            quantize_language_model_int8(llava)

    # ------------------------------------------------------------------ bookkeeping
    def train(self, mode: bool = True) -> "System2Planner":
        """Train mode for the trainable parts only; the frozen LLaVA stays in eval mode."""
        super().train(mode)
        self.llava.eval()
        return self

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield "act_embedding", self.act_embedding
        for prefix, module in (("projection", self.projection), ("aux_head", self.aux_head)):
            for name, parameter in module.named_parameters():
                yield f"{prefix}.{name}", parameter

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should get: ``<ACT>`` row, projection, aux head."""
        return [parameter for _, parameter in self.named_trainable_parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: parameter.detach().clone() for name, parameter in self.named_trainable_parameters()}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy saved trainable tensors in, checking names and shapes (ValueError)."""
        own = dict(self.named_trainable_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"trainable weights do not match: missing {missing}, unexpected {unexpected}")
        saved_hidden = state["act_embedding"].shape[-1]
        if state["act_embedding"].dim() != 1 or saved_hidden != self.hidden_size:
            raise ValueError(
                f"hidden size mismatch: the saved <ACT> embedding has shape {tuple(state['act_embedding'].shape)} "
                f"but the LLaVA hidden size is {self.hidden_size}"
            )
        saved_goal = state["projection.weight"].shape[0]
        if saved_goal != self.config.goal_dim:
            raise ValueError(
                f"goal_dim mismatch: the saved projection outputs {saved_goal} dims, config.goal_dim={self.config.goal_dim}"
            )
        for name, parameter in own.items():
            tensor = state[name]
            if tuple(tensor.shape) != tuple(parameter.shape):
                raise ValueError(f"shape mismatch for {name}: saved {tuple(tensor.shape)}, model {tuple(parameter.shape)}")
            with torch.no_grad():
                parameter.copy_(tensor.to(dtype=parameter.dtype, device=parameter.device))

    @property
    def device(self) -> torch.device:
        return self.act_embedding.device

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        use_prefix_cache: bool | None = None,
    ) -> System2Output:
        """Run System 2 on a batch.

        Args:
            pixel_values: ``(B, 3, S, S)`` normalised images, S = ``config.image_size``.
            input_ids: ``(B, L)`` prompt ids from :class:`System2Processor`: each row holds
                ``num_image_tokens`` image placeholders and exactly one ``<ACT>`` among its
                unpadded tokens; padding may be on either side.
            attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding (all ones if None).
            use_prefix_cache: reuse the cached key/values of the tokens before the image
                (see :meth:`prefix_key_values`); ``None`` follows ``config.prefix_cache``.
                ``False`` is the reference path: one forward over the whole sequence. A
                batch whose rows do not share the tokens before the image (or whose
                ``<ACT>`` precedes the image) takes the reference path either way.

        Returns:
            :class:`System2Output` with ``goal`` ``(B, goal_dim)``, ``act_hidden_state``
            ``(B, H)``, ``aux_position`` ``(B, 3)``, ``aux_rotation_6d`` ``(B, 6)`` and
            ``aux_gripper_logit`` ``(B, 1)``, all float32.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        batch, length = input_ids.shape
        if pixel_values.dim() != 4 or pixel_values.shape[0] != batch:
            raise ValueError(
                f"pixel_values must be (B, 3, S, S) with B={batch}, got shape {tuple(pixel_values.shape)}"
            )
        device = self.device
        if self.config.quantization != "none" and device.type != "cpu":
            raise RuntimeError(f"the int8 dynamic quantized planner runs on CPU only, but it is on {device}")
        input_ids = input_ids.to(device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        attention_mask = attention_mask.to(device).long()
        real = attention_mask.bool()

        act_mask = (input_ids == self.act_token_id) & real
        act_counts = act_mask.sum(dim=1)
        if not bool((act_counts == 1).all()):
            raise ValueError(f"every row needs exactly one {self.config.act_token!r} token, found {act_counts.tolist()}")
        act_positions = act_mask.long().argmax(dim=1)
        image_mask = (input_ids == self.image_token_id) & real
        image_counts = image_mask.sum(dim=1)
        if not bool((image_counts == self.num_image_tokens).all()):
            raise ValueError(
                f"every row needs {self.num_image_tokens} image tokens (one per image feature), "
                f"found {image_counts.tolist()}"
            )

        use_cache = self.config.prefix_cache if use_prefix_cache is None else use_prefix_cache
        split = _split_at_image(input_ids, attention_mask, image_mask, act_positions) if use_cache else None
        if split is None:
            inputs_embeds = self._embed(pixel_values, input_ids, act_mask, image_mask, real)
            # Positions count real tokens only, so left and right padding give the same result.
            position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
            hidden = self.llava.model.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            ).last_hidden_state
        else:
            hidden, act_positions = self._forward_after_prefix(pixel_values, input_ids, attention_mask, split)
        act_hidden = hidden[torch.arange(batch, device=device), act_positions].float()
        goal = self.projection(act_hidden)
        position, rotation, gripper = self.aux_head(act_hidden)
        return System2Output(
            goal=goal,
            act_hidden_state=act_hidden,
            aux_position=position,
            aux_rotation_6d=rotation,
            aux_gripper_logit=gripper,
        )

    def _embed(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        act_mask: torch.Tensor,
        image_mask: torch.Tensor,
        real: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, T, H)`` language-model inputs for ``(B, T)`` ids (a whole prompt or the part
        after its prefix): table rows, projected CLIP features at the ``num_image_tokens``
        image positions of each row, :attr:`act_embedding` at ``<ACT>``."""
        batch, length = input_ids.shape
        llava_model = self.llava.model
        dtype = self.llava.dtype
        # Frozen table lookup; the spliced positions read a harmless id instead.
        fill = self.llava.config.text_config.pad_token_id or 0
        safe_ids = input_ids.masked_fill(act_mask | image_mask | ~real, fill)
        inputs_embeds = llava_model.get_input_embeddings()(safe_ids)

        image_output = llava_model.get_image_features(
            pixel_values=pixel_values.to(device=input_ids.device, dtype=dtype),
            vision_feature_layer=self.llava.config.vision_feature_layer,
            vision_feature_select_strategy=self.llava.config.vision_feature_select_strategy,
            return_dict=True,
        )
        image_features = torch.cat(list(image_output.pooler_output), dim=0).to(inputs_embeds.dtype)
        if image_features.shape[0] != batch * self.num_image_tokens:
            raise ValueError(
                f"vision tower returned {image_features.shape[0]} features for {batch} images; "
                f"expected {self.num_image_tokens} per image"
            )
        inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), image_features)
        act = self.act_embedding.to(inputs_embeds.dtype).expand(batch, length, -1)
        return torch.where(act_mask.unsqueeze(-1), act, inputs_embeds)

    def _forward_after_prefix(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        split: "_PrefixSplit",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Language model over the tokens after the shared prefix, on top of its cached
        key/values. Returns the ``(B, T, H)`` last hidden states of those T tokens and the
        ``(B,)`` index of ``<ACT>`` among them."""
        from transformers import DynamicCache

        batch = input_ids.shape[0]
        prefix_length = len(split.prefix_ids)
        suffix_ids = input_ids.gather(1, split.index)
        suffix_real = split.mask.bool()
        act_mask = (suffix_ids == self.act_token_id) & suffix_real
        image_mask = (suffix_ids == self.image_token_id) & suffix_real
        inputs_embeds = self._embed(pixel_values, suffix_ids, act_mask, image_mask, suffix_real)

        # A fresh cache per call around the stored tensors: DynamicLayer.update concatenates
        # into new tensors, so the stored prefix is never written to; expand() shares it
        # across the batch without a copy.
        language_model = self.llava.model.language_model
        cache = DynamicCache(
            ddp_cache_data=[
                (keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
                for keys, values in self.prefix_key_values(split.prefix_ids)
            ],
            config=language_model.config,
        )
        # The prefix is all real tokens, so the full forward's positions (real tokens counted
        # from 0) continue at prefix_length after it.
        position_ids = prefix_length + (split.mask.cumsum(dim=1) - 1).clamp(min=0)
        prefix_mask = attention_mask.new_ones((batch, prefix_length))
        hidden = language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=torch.cat([prefix_mask, split.mask], dim=1),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        return hidden, split.act_index

    # ------------------------------------------------------------------ prefix cache
    def _prefix_cache_key(self, prefix_ids: tuple[int, ...]) -> tuple:
        """What the prefix key/values depend on besides the weights' values: the ids, where
        and in which dtype (autocast included: training runs under bf16 autocast on a GPU)
        and attention kernel they run, the quantization, and each language-model parameter's
        storage and in-place version (``.to()``, ``.half()`` or ``load_state_dict`` on the
        LLaVA change one of them). Reading the ~300 versions of a 7B costs well under a
        millisecond, and on a GPU it overlaps the vision tower already queued."""
        language_model = self.llava.model.language_model
        weights = tuple((parameter.data_ptr(), parameter._version) for parameter in language_model.parameters())
        device = self.device
        autocast = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type)
        return (
            prefix_ids,
            str(device),
            self.llava.dtype,
            autocast,
            language_model.config._attn_implementation,
            self.config.quantization,
            weights,
        )

    def prefix_key_values(self, prefix_ids: tuple[int, ...]) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per language-model layer ``(keys, values)``, each ``(1, kv_heads, P, head_dim)``,
        of the P prompt tokens ``prefix_ids`` (those before the image), computed on first use
        and kept until the ids, device, dtype, quantization or language-model weights change.

        They are computed outside inference mode and without autograd, so the same tensors
        serve inference and training (nothing trainable comes before the image)."""
        key = self._prefix_cache_key(prefix_ids)
        if self._prefix_cache is not None and self._prefix_cache[0] == key:
            return self._prefix_cache[1]
        self._prefix_cache = None  # drop the stale tensors before computing the new ones
        language_model = self.llava.model.language_model
        with torch.inference_mode(False), torch.no_grad():
            ids = torch.tensor([prefix_ids], dtype=torch.long, device=self.device)
            outputs = language_model(
                inputs_embeds=self.llava.model.get_input_embeddings()(ids),
                position_ids=torch.arange(len(prefix_ids), device=self.device).unsqueeze(0),
                use_cache=True,
            )
            layers = tuple((layer.keys, layer.values) for layer in outputs.past_key_values.layers)
        self._prefix_cache = (key, layers)
        return layers

    # ------------------------------------------------------------------ int8 on CPU
    def quantize_int8(self) -> "System2Planner":
        """Quantize the language model's Linear layers to int8 in place (see
        :func:`quantize_language_model_int8`) and record it in ``config.quantization``."""
        quantize_language_model_int8(self.llava)
        self.config = replace(self.config, quantization="int8_dynamic")
        self._prefix_cache = None
        return self

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and the trainable tensors (``<ACT>`` row, projection, aux
        head) as safetensors. The frozen LLaVA is referenced by ``config.llava_path`` (or
        rebuilt from ``llava_config`` + ``seed``), never copied."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "hidden_size": self.hidden_size,
            "config": self.config.to_dict(),
        }
        (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        tensors = {name: tensor.contiguous().cpu() for name, tensor in self.trainable_state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
        return directory

    @staticmethod
    def read_pretrained_config(directory: str | os.PathLike) -> tuple[System2Config, dict[str, Any]]:
        """Parse ``config.json`` of a :meth:`save_pretrained` directory."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"System 2 checkpoint directory {str(directory)!r} does not exist")
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{str(config_file)!r} is missing: not a System 2 checkpoint written by save_pretrained"
            )
        try:
            payload = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(config_file)!r} is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME or "config" not in payload:
            raise ValueError(f"{str(config_file)!r} is not a System 2 config (format {FORMAT_NAME!r} expected)")
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(config_file)!r} has format_version {payload.get('format_version')!r}; this code reads {FORMAT_VERSION}"
            )
        return System2Config.from_dict(payload["config"]), payload

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        llava_path: str | os.PathLike | None = None,
        *,
        llava=None,
        tokenizer=None,
        goal_dim: int | None = None,
        device: torch.device | str | None = None,
    ) -> "System2Planner":
        """Rebuild a planner saved by :meth:`save_pretrained`.

        Args:
            directory: the checkpoint directory.
            llava_path: local LLaVA directory overriding the one recorded in the config
                (the checkpoint may have been trained on another machine).
            llava, tokenizer: already loaded LLaVA / tokenizer to reuse.
            goal_dim: if given, the checkpoint must produce goals of this size.
            device: device to build on.

        Raises:
            FileNotFoundError: missing directory, ``config.json``, weights file or LLaVA dir.
            ValueError: goal_dim or hidden-size mismatch, wrong/missing tensors.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        config, payload = cls.read_pretrained_config(directory)
        weights_file = Path(directory) / WEIGHTS_NAME
        if not weights_file.is_file():
            raise FileNotFoundError(f"{str(weights_file)!r} is missing: the checkpoint has no trained weights")
        if goal_dim is not None and goal_dim != config.goal_dim:
            raise ValueError(f"goal_dim mismatch: checkpoint produces {config.goal_dim}-D goals, caller expects {goal_dim}")
        if llava_path is not None:
            config = replace(config, llava_path=str(llava_path))
        try:
            state = load_file(str(weights_file))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"cannot read {str(weights_file)!r}: {exc}") from exc
        if "act_embedding" not in state or "projection.weight" not in state:
            raise ValueError(f"{str(weights_file)!r} lacks act_embedding/projection.weight")
        if state["projection.weight"].shape[0] != config.goal_dim:
            raise ValueError(
                f"goal_dim mismatch: config.json says {config.goal_dim} but the saved projection "
                f"outputs {state['projection.weight'].shape[0]}"
            )
        if llava is not None:
            llava_hidden = llava.config.text_config.hidden_size
        else:
            llava_hidden = resolve_llava_config(config).text_config.hidden_size
        saved_hidden = int(state["act_embedding"].shape[-1])
        if saved_hidden != llava_hidden:
            raise ValueError(
                f"hidden size mismatch: the saved <ACT> embedding has {saved_hidden} dims but the LLaVA "
                f"({config.llava_path or 'built from llava_config'}) has hidden size {llava_hidden}"
            )
        planner = cls(config, llava=llava, tokenizer=tokenizer, device=device)
        planner.load_trainable_state_dict(state)
        return planner

    # ------------------------------------------------------------------ OpenHelix import
    @classmethod
    def from_openhelix_checkpoint(
        cls,
        path: str | os.PathLike,
        config: System2Config,
        *,
        llava=None,
        tokenizer=None,
        act_token_row: int = 32003,
        device: torch.device | str | None = None,
    ) -> "System2Planner":
        """Build a planner whose trainable parts come from an original OpenHelix planner
        checkpoint (``pytorch_model.bin`` written by ``engine_act_simple.py``; ``path`` is the
        file or the directory holding it). See :func:`convert_openhelix_state_dict` for the
        key mapping. The aux head is rebuilt as OpenHelix's (``identity`` activation, width
        taken from the checkpoint) and ``goal_dim`` from the projection. Only the trainable
        parts are taken: OpenHelix's frozen LLaVA (LLaVA-7B-Lightening, legacy layout) is
        not converted, so ``config``/``llava`` must name a transformers LLaVA with the same
        hidden size.
        """
        state = load_openhelix_state_dict(path)
        converted = convert_openhelix_state_dict(state, act_token_row=act_token_row)
        width = converted["aux_head.trunk.weight"].shape[0]
        goal = converted["projection.weight"].shape[0]
        config = replace(config, aux_hidden_dim=int(width), aux_activation="identity", goal_dim=int(goal))
        planner = cls(config, llava=llava, tokenizer=tokenizer, device=device)
        planner.load_trainable_state_dict(converted)
        return planner


# ---------------------------------------------------------------------------- OpenHelix checkpoints
#: OpenHelix planner key (after stripping ``module.`` / ``base_model.model.``) -> ours.
OPENHELIX_KEY_MAP: dict[str, str] = {
    "model.text_hidden_fcs.0.0.weight": "projection.weight",
    "model.text_hidden_fcs.0.0.bias": "projection.bias",
    "model.pred_act_mlps.weight": "aux_head.trunk.weight",
    "model.pred_act_mlps.bias": "aux_head.trunk.bias",
    "model.pred_pos_act.weight": "aux_head.position.weight",
    "model.pred_pos_act.bias": "aux_head.position.bias",
    "model.pred_rot_act.weight": "aux_head.rotation.weight",
    "model.pred_rot_act.bias": "aux_head.rotation.bias",
    "model.pred_gripper_act.weight": "aux_head.gripper.weight",
    "model.pred_gripper_act.bias": "aux_head.gripper.bias",
}
OPENHELIX_EMBED_KEY = "model.embed_tokens.weight"


def load_openhelix_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an OpenHelix planner ``state_dict`` (``.bin``/``.pth`` via ``torch.load`` with
    ``weights_only=True``, or ``.safetensors``); a directory means its ``pytorch_model.bin``."""
    path = Path(path)
    if path.is_dir():
        path = path / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"OpenHelix checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state_dict")
    return state


def convert_openhelix_state_dict(state: Mapping[str, torch.Tensor], act_token_row: int = 32003) -> dict[str, torch.Tensor]:
    """Map an OpenHelix planner ``state_dict`` to System 2 trainable tensors.

    Mapping (prefixes ``module.`` and PEFT's ``base_model.model.`` are stripped first):

    * ``model.text_hidden_fcs.0.0.{weight,bias}`` -> ``projection.*`` (Linear(H, 512))
    * ``model.pred_act_mlps.*`` -> ``aux_head.trunk.*`` (Linear(H, H//2))
    * ``model.pred_pos_act.*`` / ``pred_rot_act.*`` / ``pred_gripper_act.*`` ->
      ``aux_head.position.*`` / ``rotation.*`` / ``gripper.*``
    * row ``act_token_row`` of ``model.embed_tokens.weight`` -> ``act_embedding``
      (OpenHelix hard-codes the ``<ACT>`` id as 32003 for its LLaVA-Lightening tokenizer).

    Everything else (LLaVA, vision tower, projector, LoRA, lm_head) is ignored.
    """
    stripped = {strip_wrapper_prefixes(key): tensor for key, tensor in state.items()}
    missing = [key for key in (*OPENHELIX_KEY_MAP, OPENHELIX_EMBED_KEY) if key not in stripped]
    if missing:
        raise ValueError(f"not an OpenHelix planner checkpoint: missing {missing}")
    converted = {ours: stripped[theirs].detach().float().clone() for theirs, ours in OPENHELIX_KEY_MAP.items()}
    embedding = stripped[OPENHELIX_EMBED_KEY]
    if not 0 <= act_token_row < embedding.shape[0]:
        raise ValueError(f"act_token_row {act_token_row} is outside the embedding table ({embedding.shape[0]} rows)")
    converted["act_embedding"] = embedding[act_token_row].detach().float().clone()
    return converted


def openhelix_head_state_dict(
    state: Mapping[str, torch.Tensor], act_token_row: int = 32003, source: str = "OpenHelix planner checkpoint"
):
    """System 2 trainable tensors from an OpenHelix planner state dict, with a report.

    Same mapping as :func:`convert_openhelix_state_dict`, but the auxiliary head
    (``model.pred_*``) is optional: tensors present are returned, absent ones are left out
    (the ``prompt_tuning`` release may not store them). ``model.text_hidden_fcs.0.0.*`` and
    ``model.embed_tokens.weight`` are required.

    Returns:
        ``(tensors, KeyMapping)``; the report's ``matched`` maps our names to theirs.

    Raises:
        CheckpointError naming missing required keys or shape conflicts within the heads.
    """
    stripped = {strip_wrapper_prefixes(key): (key, tensor) for key, tensor in state.items()}
    report = KeyMapping(source=source)
    tensors: dict[str, torch.Tensor] = {}
    for theirs, ours in OPENHELIX_KEY_MAP.items():
        if theirs in stripped:
            tensors[ours] = stripped[theirs][1].detach().float().clone()
            report.matched[ours] = stripped[theirs][0]
        elif not ours.startswith("aux_head."):
            report.missing.append(theirs)
    if OPENHELIX_EMBED_KEY not in stripped:
        report.missing.append(OPENHELIX_EMBED_KEY)
    report.raise_if_incomplete("the OpenHelix System 2 heads")
    original, embedding = stripped[OPENHELIX_EMBED_KEY]
    if not 0 <= act_token_row < embedding.shape[0]:
        raise CheckpointError(f"act_token_row {act_token_row} is outside the embedding table ({embedding.shape[0]} rows)")
    tensors["act_embedding"] = embedding[act_token_row].detach().float().clone()
    report.matched["act_embedding"] = f"{original}[{act_token_row}]"
    hidden = tensors["act_embedding"].shape[0]
    projection = tuple(tensors["projection.weight"].shape)
    if projection[1] != hidden:
        report.mismatched["projection.weight"] = (projection, (projection[0], hidden))
    report.raise_if_incomplete("the OpenHelix System 2 heads")
    return tensors, report


# ---------------------------------------------------------------------------- losses
def compute_aux_loss(
    output: System2Output,
    targets: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Auxiliary losses on the ``<ACT>`` hidden state.

    Args:
        output: a :class:`System2Output` of batch B.
        targets: ``"position"`` ``(B, 3)``, ``"rotation_6d"`` ``(B, 6)`` and ``"gripper"``
            ``(B,)`` or ``(B, 1)`` openness in ``[0, 1]`` (1 = open).
        weights: optional ``{"position", "rotation", "gripper"}`` multipliers (default 1).

    Returns:
        ``{"loss": total, "position": L1, "rotation": L1, "gripper": BCE-with-logits}``.
    """
    for key in ("position", "rotation_6d", "gripper"):
        if key not in targets:
            raise ValueError(f"targets lacks {key!r}")
    weights = {"position": 1.0, "rotation": 1.0, "gripper": 1.0, **(weights or {})}
    device = output.goal.device
    position = targets["position"].to(device=device, dtype=torch.float32)
    rotation = targets["rotation_6d"].to(device=device, dtype=torch.float32)
    gripper = targets["gripper"].to(device=device, dtype=torch.float32)
    if gripper.numel() != output.aux_gripper_logit.numel():
        raise ValueError(f"gripper target shape {tuple(gripper.shape)} does not fit {tuple(output.aux_gripper_logit.shape)}")
    gripper = gripper.reshape(output.aux_gripper_logit.shape)
    if position.shape != output.aux_position.shape:
        raise ValueError(f"position target shape {tuple(position.shape)} != {tuple(output.aux_position.shape)}")
    if rotation.shape != output.aux_rotation_6d.shape:
        raise ValueError(f"rotation_6d target shape {tuple(rotation.shape)} != {tuple(output.aux_rotation_6d.shape)}")
    losses = {
        "position": F.l1_loss(output.aux_position, position),
        "rotation": F.l1_loss(output.aux_rotation_6d, rotation),
        "gripper": F.binary_cross_entropy_with_logits(output.aux_gripper_logit, gripper),
    }
    losses["loss"] = sum(weights[name] * value for name, value in losses.items())
    return losses
