"""Checkpoint loading for both systems: tensor files, LLaVA key layouts, the published
OpenHelix release. The key-mapping reports and :class:`CheckpointError` live in
:mod:`openhelix_core.checkpoint_keys`, which the models use too.

Nothing here unpickles arbitrary objects: tensors are read with safetensors, or with
``torch.load(weights_only=True)`` for ``.bin`` / ``.pth`` files.

Facts this module relies on (sources read, not guessed):

* OpenHelix's training loop (``engine_act_simple.py`` in OpenHelix-robot/OpenHelix,
  ``save_checkpoint``) writes the policy (System 1) as
  ``torch.save({"weight": ddp_model.state_dict(), "optimizer": ..., "iter": ..., "best_loss": ...})``;
  the model is wrapped in ``DistributedDataParallel``, so every key starts with ``module.``.
  The planner (System 2) is written separately with ``save_pretrained`` and
  ``torch.save(LCB_model.module.state_dict(), "pytorch_model.bin")``.
* The published weights (README of OpenHelix-robot/OpenHelix, "Checkpoints") live in
  ``prompt_tuning/`` and ``prompt_tuning_aux/`` of the Hugging Face repo
  ``OpenHelix/openhelix``: ``policy.pth`` plus the planner as safetensors shards in
  ``llava_ckpt_safetensors/``, which the README merges by loading every ``*.safetensors`` in
  sorted order (so the shards hold disjoint keys and need no index to be read).
* The planner is ``LISAForCausalLM`` on top of LLaVA-Lightning's ``LlavaLlamaForCausalLM``
  (``planer_utils.py``), whose ``state_dict`` names are ``model.embed_tokens.*``,
  ``model.layers.*``, ``model.norm.*``, ``lm_head.*``, ``model.vision_tower.vision_tower.*``
  (a ``CLIPVisionTower`` holding a ``CLIPVisionModel``) and ``model.mm_projector.*`` -- a
  single ``nn.Linear(mm_hidden, hidden)`` in LISA's LLaVA copy, which OpenHelix ships
  unchanged in this respect (``model/llava/model/llava_arch.py``,
  ``model/llava/model/multimodal_encoder/clip_encoder.py`` of both dvlab-research/LISA and
  OpenHelix-robot/OpenHelix). The CLIP ViT-L/14 tower is a submodule once
  ``initialize_vision_modules`` has run (not a list: training uses DDP, not FSDP), so the
  saved state dict holds it -- plus OpenHelix's heads
  ``model.text_hidden_fcs.*`` and ``model.pred_*``. OpenHelix's evaluation strips a PEFT
  ``base_model.model.`` prefix before loading (``evaluate_policy_lcb_pt_act_simple_asy10.py``).
* transformers 5.x names ``LlavaForConditionalGeneration`` weights ``model.language_model.*``,
  ``model.vision_tower.*`` (no ``vision_model.`` level: ``CLIPVisionModel`` has a
  ``PrefixChange(prefix_to_remove="vision_model")``), ``model.multi_modal_projector.*`` and
  ``lm_head.*``; its ``conversion_mapping.py`` renames the 4.x names
  ``language_model.lm_head`` -> ``lm_head``, ``language_model.model`` ->
  ``model.language_model``, ``vision_tower`` -> ``model.vision_tower``,
  ``multi_modal_projector`` -> ``model.multi_modal_projector``.

Not confirmed (the files are not readable from here): whether the published shard folder
also holds ``model.safetensors.index.json``, ``config.json`` or a tokenizer (both are
handled / asked for); the exact shard file names; that the published shards do hold the CLIP
tower (a missing ``model.vision_tower.*`` key is reported, never filled in); that
OpenHelix's ``DiffuserActorACTS`` has no
keys beyond 3DDA's (any extra key is reported as unexpected, never dropped silently).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .checkpoint_keys import CheckpointError, ConvertedState, KeyMapping, abbreviated_keys, strip_wrapper_prefixes
from .models.system1 import DiffuserActor, Normalization, System1Config
from .models.system1.modeling_system1 import map_original_state_dict
from .models.system2 import System2Config, System2Planner, System2Processor, build_image_processor
from .models.system2.modeling_system2 import (
    _DTYPES,
    ensure_act_token,
    openhelix_head_state_dict,
    resolve_attn_implementation,
)
from .models.system2.tiny_tokenizer import SPECIAL_TOKENS, TINY_VOCAB_SIZE
from .models.system2.tokenization_system2 import (
    LlamaSentencePieceTokenizer,
    complete_lightning_vocabulary,
    has_sentencepiece_model,
)

#: Vocabulary the published OpenHelix planner was trained with: the LLaVA-Lightning
#: tokenizer plus ``<ACT>`` (OpenHelix hard-codes the ``<ACT>`` id as 32003).
OPENHELIX_VOCAB_SIZE = 32004
OPENHELIX_ACT_TOKEN_ID = 32003
OPENHELIX_VARIANTS = ("prompt_tuning", "prompt_tuning_aux")
POLICY_FILE = "policy.pth"
PLANNER_SHARD_DIR = "llava_ckpt_safetensors"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
LLAVA_LAYOUTS = ("transformers_new", "transformers_old", "lightning")


# ---------------------------------------------------------------------------- reading files
def read_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of one ``.safetensors`` file, or of a ``.bin`` / ``.pth`` state dict read
    with ``torch.load(weights_only=True)`` (a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"cannot read {str(path)!r}: {error}") from error
    payload = _torch_load(path)
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a flat state dict of tensors")
    return payload


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types
        raise CheckpointError(f"cannot read {str(path)!r} with torch.load(weights_only=True): {error}") from error


def _read_index(index_file: Path) -> dict[str, str]:
    try:
        payload = json.loads(index_file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{str(index_file)!r} is not valid JSON: {error}") from error
    weight_map = payload.get("weight_map") if isinstance(payload, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{str(index_file)!r} has no 'weight_map'")
    return {str(k): str(v) for k, v in weight_map.items()}


def _load_indexed(index_file: Path) -> dict[str, torch.Tensor]:
    weight_map = _read_index(index_file)
    directory = index_file.parent
    shards = sorted(set(weight_map.values()))
    absent = [name for name in shards if not (directory / name).is_file()]
    if absent:
        raise FileNotFoundError(f"{str(index_file)!r} names shard(s) {absent} that are missing from {str(directory)!r}")
    state: dict[str, torch.Tensor] = {}
    for name in shards:
        tensors = read_tensor_file(directory / name)
        listed = [key for key, shard in weight_map.items() if shard == name]
        lacking = [key for key in listed if key not in tensors]
        if lacking:
            raise CheckpointError(f"shard {name!r} lacks key(s) {abbreviated_keys(lacking)} that {index_file.name} places in it")
        for key in listed:
            state[key] = tensors[key]
    return state


def _load_shards(files: list[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}
    for path in files:
        for key, tensor in read_tensor_file(path).items():
            if key in state:
                raise CheckpointError(f"key {key!r} is in both {where[key]!r} and {path.name!r}")
            state[key] = tensor
            where[key] = path.name
    return state


def load_llava_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a LLaVA (or OpenHelix planner) state dict from a directory, keys unchanged.

    Looked for in this order: ``model.safetensors``; ``model.safetensors.index.json`` (every
    shard it names must exist: :class:`FileNotFoundError` naming the missing ones); every
    ``*.safetensors`` in sorted order when there is no index (how OpenHelix's README merges
    ``llava_ckpt_safetensors``; a key in two shards is an error); ``pytorch_model.bin.index.json``
    and ``pytorch_model.bin`` (``torch.load(weights_only=True)`` only). A file path is read
    directly.
    """
    path = Path(directory)
    if path.is_file():
        return read_tensor_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"LLaVA checkpoint directory {str(path)!r} does not exist")
    if (path / SAFE_WEIGHTS).is_file():
        return read_tensor_file(path / SAFE_WEIGHTS)
    if (path / SAFE_INDEX).is_file():
        return _load_indexed(path / SAFE_INDEX)
    shards = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if shards:
        return _load_shards(shards)
    if (path / BIN_INDEX).is_file():
        return _load_indexed(path / BIN_INDEX)
    if (path / BIN_WEIGHTS).is_file():
        return read_tensor_file(path / BIN_WEIGHTS)
    raise FileNotFoundError(
        f"{str(path)!r} holds no LLaVA weights: expected {SAFE_WEIGHTS}, {SAFE_INDEX}, *.safetensors shards, "
        f"{BIN_INDEX} or {BIN_WEIGHTS}"
    )


# ---------------------------------------------------------------------------- LLaVA key layouts
def detect_llava_layout(keys: Iterable[str]) -> str:
    """``"transformers_new"`` (5.x ``model.language_model.*``), ``"transformers_old"``
    (4.x ``language_model.model.*``) or ``"lightning"`` (LLaVA-Lightning / OpenHelix
    ``model.layers.*``, ``model.mm_projector.*``); wrapper prefixes are ignored."""
    keys = [strip_wrapper_prefixes(k) for k in keys]
    if any(k.startswith("model.language_model.") for k in keys):
        return "transformers_new"
    if any(k.startswith(("language_model.model.", "language_model.lm_head.")) for k in keys):
        return "transformers_old"
    if any(k.startswith(("model.layers.", "model.embed_tokens.", "model.mm_projector.", "model.vision_tower.vision_tower."))
           for k in keys):
        return "lightning"
    raise CheckpointError(f"cannot tell the LLaVA key layout from keys such as {abbreviated_keys(sorted(keys)[:5])}")


_BUFFER = re.compile(r"(\.rotary_emb\.(inv_freq|original_inv_freq|_cos_cached|_sin_cached)|\.embeddings\.position_ids)$")
_OPENHELIX_HEADS = re.compile(r"^model\.(text_hidden_fcs|pred_act_mlps|pred_pos_act|pred_rot_act|pred_gripper_act)\.")

#: (pattern, replacement) per layout; the first matching rule wins.
_RULES: dict[str, list[tuple[re.Pattern, str]]] = {
    "transformers_new": [
        (re.compile(r"^model\.vision_tower\.vision_model\.(.+)$"), r"model.vision_tower.\1"),  # 4.5x saves
        (re.compile(r"^(model\.(language_model|vision_tower|multi_modal_projector)\..+)$"), r"\1"),
        (re.compile(r"^(lm_head\..+)$"), r"\1"),
    ],
    "transformers_old": [
        (re.compile(r"^language_model\.lm_head\.(.+)$"), r"lm_head.\1"),
        (re.compile(r"^language_model\.model\.(.+)$"), r"model.language_model.\1"),
        (re.compile(r"^vision_tower\.vision_model\.(.+)$"), r"model.vision_tower.\1"),
        (re.compile(r"^vision_tower\.(.+)$"), r"model.vision_tower.\1"),
        (re.compile(r"^multi_modal_projector\.(.+)$"), r"model.multi_modal_projector.\1"),
    ],
    "lightning": [
        (re.compile(r"^model\.embed_tokens\.(.+)$"), r"model.language_model.embed_tokens.\1"),
        (re.compile(r"^model\.layers\.(.+)$"), r"model.language_model.layers.\1"),
        (re.compile(r"^model\.norm\.(.+)$"), r"model.language_model.norm.\1"),
        (re.compile(r"^lm_head\.(.+)$"), r"lm_head.\1"),
        (re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.(.+)$"), r"model.vision_tower.\1"),
        (re.compile(r"^model\.mm_projector\.0\.(weight|bias)$"), r"model.multi_modal_projector.linear_1.\1"),
        (re.compile(r"^model\.mm_projector\.2\.(weight|bias)$"), r"model.multi_modal_projector.linear_2.\1"),
        (re.compile(r"^model\.mm_projector\.(weight|bias)$"), r"model.multi_modal_projector.linear_1.\1"),
    ],
}


def convert_llava_keys(state: Mapping[str, torch.Tensor], layout: str = "auto") -> ConvertedState:
    """Rename a LLaVA state dict onto transformers 5.x ``LlavaForConditionalGeneration`` names.

    Args:
        state: checkpoint tensors; ``module.`` / ``base_model.model.`` prefixes are stripped.
        layout: ``"transformers_new"``, ``"transformers_old"``, ``"lightning"`` (alias
            ``"openhelix"``) or ``"auto"`` (:func:`detect_llava_layout`).

    Mapping:

    * new: unchanged, except ``model.vision_tower.vision_model.*`` -> ``model.vision_tower.*``;
    * old: ``language_model.model.*`` -> ``model.language_model.*``,
      ``language_model.lm_head.*`` -> ``lm_head.*``, ``vision_tower.vision_model.*`` ->
      ``model.vision_tower.*``, ``multi_modal_projector.*`` -> ``model.multi_modal_projector.*``;
    * lightning: ``model.{embed_tokens,layers,norm}.*`` -> ``model.language_model.*``,
      ``lm_head.*`` kept, ``model.vision_tower.vision_tower.vision_model.*`` ->
      ``model.vision_tower.*``, ``model.mm_projector.{0,2}.*`` -> ``linear_{1,2}``; a
      single-linear ``model.mm_projector.{weight,bias}`` -> ``linear_1`` and ``linear_2``
      is *derived* as the identity (exact; the LLaVA config must then use
      ``projector_hidden_act="linear"``). OpenHelix's heads (``model.text_hidden_fcs``,
      ``model.pred_*``) are listed as ignored: :func:`convert_openhelix_state_dict` reads them.

    Non-persistent buffers (rotary ``inv_freq`` caches, ``position_ids``) are ignored in
    every layout; any other unknown key lands in ``unmapped`` (reported as unexpected).
    """
    if layout == "openhelix":
        layout = "lightning"
    if layout == "auto":
        layout = detect_llava_layout(state)
    if layout not in _RULES:
        raise ValueError(f"layout must be 'auto' or one of {LLAVA_LAYOUTS}, got {layout!r}")
    out = ConvertedState(layout=layout)
    for original, tensor in state.items():
        key = strip_wrapper_prefixes(original)
        if _BUFFER.search(key):
            out.ignored[original] = "non-persistent buffer, recomputed by the model"
            continue
        if layout == "lightning" and _OPENHELIX_HEADS.match(key):
            out.ignored[original] = "OpenHelix System 2 head (read by convert_openhelix_state_dict)"
            continue
        for pattern, replacement in _RULES[layout]:
            if pattern.match(key):
                out.add(pattern.sub(replacement, key), tensor, original)
                break
        else:
            out.unmapped.append(original)
    single = "model.multi_modal_projector.linear_1.weight"
    if (layout == "lightning" and strip_wrapper_prefixes(out.origins.get(single, "")) == "model.mm_projector.weight"
            and not any(k.startswith("model.multi_modal_projector.linear_2.") for k in out.tensors)):
        weight = out.tensors[single]
        width = weight.shape[0]
        out.tensors["model.multi_modal_projector.linear_2.weight"] = torch.eye(width, dtype=weight.dtype)
        out.tensors["model.multi_modal_projector.linear_2.bias"] = torch.zeros(width, dtype=weight.dtype)
        note = "identity: LLaVA-Lightning's projector is one Linear (needs projector_hidden_act='linear')"
        for name in ("weight", "bias"):
            out.derived[f"model.multi_modal_projector.linear_2.{name}"] = note
            out.origins[f"model.multi_modal_projector.linear_2.{name}"] = "(derived)"
    return out


# ---------------------------------------------------------------------------- vocabulary
def check_vocabulary(
    tokenizer,
    embedding_rows: int,
    expected: int | None = OPENHELIX_VOCAB_SIZE,
    *,
    act_token: str | None = None,
    act_token_id: int | None = None,
) -> None:
    """Fail loudly when tokenizer, checkpoint and expectation disagree on the vocabulary.

    Args:
        tokenizer: anything with ``len()`` (and ``convert_tokens_to_ids`` when ``act_token``
            is given).
        embedding_rows: rows of the checkpoint's input-embedding table.
        expected: vocabulary the weights were trained with (OpenHelix: 32004), or None.
        act_token / act_token_id: if given, ``act_token`` must have this id (OpenHelix: 32003).

    Raises:
        ValueError naming both numbers and the likely cause.
    """
    size = len(tokenizer)
    if expected is not None and embedding_rows != expected:
        raise ValueError(
            f"vocabulary mismatch: the checkpoint's embedding table has {embedding_rows} rows but "
            f"{expected} were expected; likely cause: a checkpoint of another model or a table padded/"
            "resized after training"
        )
    if size != embedding_rows:
        if size < embedding_rows:
            cause = (f"the tokenizer lacks {embedding_rows - size} token(s) the weights were trained with; "
                     "most often <ACT> was not added (OpenHelix adds <ACT> to the LLaVA-Lightning tokenizer, "
                     f"giving {OPENHELIX_ACT_TOKEN_ID + 1} tokens), and padding the tokenizer or table instead "
                     "feeds <ACT> through the wrong embedding row, which fails silently at run time")
        else:
            cause = (f"the tokenizer has {size - embedding_rows} token(s) more than the weights embed: a "
                     "different base tokenizer, or special tokens added twice")
        raise ValueError(
            f"vocabulary mismatch: tokenizer has {size} tokens but the checkpoint embeds {embedding_rows}; "
            f"likely cause: {cause}"
        )
    if act_token is not None and act_token_id is not None:
        got = tokenizer.convert_tokens_to_ids(act_token)
        if got != act_token_id:
            raise ValueError(
                f"vocabulary mismatch: {act_token!r} has id {got} in the tokenizer but the weights were "
                f"trained with id {act_token_id}; likely cause: tokens added in a different order"
            )


# ---------------------------------------------------------------------------- building models
def llava_from_state(llava_config, tensors: ConvertedState, *, dtype: torch.dtype = torch.float32,
                     attn_implementation: str = "sdpa", source: str = "LLaVA checkpoint",
                     allow_unexpected: bool = False):
    """Build a ``LlavaForConditionalGeneration`` for ``llava_config`` holding the converted
    tensors, without random initialisation (weights are assigned, not copied).

    Returns ``(model, KeyMapping)``; raises :class:`CheckpointError` when keys are missing,
    mismatched or (unless allowed) unexpected.
    """
    from transformers import LlavaForConditionalGeneration
    from transformers.initialization import no_init_weights

    if "model.multi_modal_projector.linear_2.weight" in tensors.derived and llava_config.projector_hidden_act != "linear":
        raise CheckpointError(
            f"{source} has a single-linear mm_projector (LLaVA-Lightning) but the LLaVA config uses "
            f"projector_hidden_act={llava_config.projector_hidden_act!r}; use 'linear'"
        )
    with no_init_weights():
        llava = LlavaForConditionalGeneration._from_config(llava_config, attn_implementation=attn_implementation, dtype=dtype)
    expected = llava.state_dict()
    report = KeyMapping.compare(tensors.tensors, expected, source=source, origins=tensors.origins,
                                ignored=tensors.ignored, unmapped=tensors.unmapped, derived=tensors.derived)
    report.raise_if_incomplete("the LLaVA architecture", allow_unexpected=allow_unexpected)
    state = {}
    for key, reference in expected.items():
        tensor = tensors.tensors[key]
        if tensor.is_floating_point():
            tensor = tensor.to(reference.dtype)
        state[key] = tensor.contiguous()
    llava.load_state_dict(state, strict=True, assign=True)
    return llava.eval(), report


# ---------------------------------------------------------------------------- System 1 policy.pth
def read_policy_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a 3DDA / OpenHelix ``policy.pth``: ``({"module."-prefixed weights}, other entries)``.

    The file is ``{"weight": DDP state dict, "optimizer": ..., "iter": int, "best_loss": ...}``
    (OpenHelix ``engine_act_simple.py``); a bare state dict is accepted too. Read with
    ``weights_only=True`` (optimizer states are plain tensors / numbers, which it allows).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"policy checkpoint {str(path)!r} does not exist")
    payload = _torch_load(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{str(path)!r} does not hold a dict")
    if "weight" in payload:
        weights = payload["weight"]
        extra = {k: v for k, v in payload.items() if k != "weight"}
    else:
        weights, extra = payload, {}
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{str(path)!r} holds no 'weight' state dict of tensors")
    return dict(weights), extra


# ---------------------------------------------------------------------------- the release
#: What a failed model load raises: FileNotFoundError / OSError (a missing or unreadable file
#: or folder), ValueError (:class:`CheckpointError`: keys, shapes, shards; a vocabulary
#: mismatch; an invalid configuration), RuntimeError (torch: out of memory, a device that
#: does not exist), ImportError (a tokenizer backend that is not installed). A ROS node
#: turns these into a failed ``configure`` naming the cause.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, ImportError)

#: Names :func:`release_architecture` knows.
RELEASE_ARCHITECTURES = ("openhelix", "tiny")


@dataclass(frozen=True)
class ReleaseArchitecture:
    """The model sizes a release's weights are read into (each key and shape is checked).

    Attributes:
        name: ``"openhelix"`` or ``"tiny"``, see :func:`release_architecture`.
        system2: the :class:`~openhelix_core.models.system2.System2Config`; its
            ``llava_config`` must match the shards.
        system1: the :class:`~openhelix_core.models.system1.System1Config`.
        vocab_size: rows of the input-embedding table the weights were trained with
            (:func:`check_vocabulary`); ``None`` skips that check.
        act_token_id: the id ``<ACT>`` must have in the tokenizer.
    """

    name: str
    system2: Any
    system1: Any
    vocab_size: int | None
    act_token_id: int


def release_architecture(name: str) -> ReleaseArchitecture:
    """The architecture called ``name``:

    * ``"openhelix"`` -- the published weights: LLaVA-7B-Lightening-v1-1 in bfloat16
      (:meth:`System2Config.openhelix_lightning`), 3D Diffuser Actor as OpenHelix trains it on
      CALVIN (:meth:`System1Config.openhelix_calvin`), 32004 tokens with ``<ACT>`` = 32003.
    * ``"tiny"`` -- for tests and smoke runs only: a release written in the published layout
      from the tiny models (:meth:`System2Config.tiny` with LLaVA-Lightning's single-linear
      projector and OpenHelix's activation-free auxiliary head, :meth:`System1Config.tiny`),
      read with the tiny byte-level tokenizer (262 tokens, ``<ACT>`` = 5). Nothing published
      has this size.

    Raises:
        ValueError naming the known architectures.
    """
    if name == "openhelix":
        return ReleaseArchitecture(name, System2Config.openhelix_lightning(), System1Config.openhelix_calvin(),
                                   OPENHELIX_VOCAB_SIZE, OPENHELIX_ACT_TOKEN_ID)
    if name == "tiny":
        system2 = System2Config.tiny(aux_activation="identity")
        system2 = replace(system2, llava_config={**system2.llava_config, "projector_hidden_act": "linear"})
        return ReleaseArchitecture(name, system2, System1Config.tiny(), TINY_VOCAB_SIZE,
                                   SPECIAL_TOKENS.index(system2.act_token))
    raise ValueError(f"release architecture must be one of {list(RELEASE_ARCHITECTURES)}, got {name!r}")


def _architecture(architecture: str | ReleaseArchitecture) -> ReleaseArchitecture:
    return architecture if isinstance(architecture, ReleaseArchitecture) else release_architecture(architecture)


def release_model_id(directory: str | os.PathLike, variant: str) -> str:
    """The ``model_id`` of models read from a release: ``openhelix/<variant>/<directory>``,
    the directory exactly as configured. Goals of its System 2 carry it, so a controller can
    accept only goals of the release whose System 1 it runs."""
    return f"openhelix/{variant}/{directory}"


@dataclass
class ReleaseSystem2:
    """System 2 read from a release.

    Attributes:
        model: the :class:`~openhelix_core.models.system2.System2Planner` (eval mode).
        processor: its :class:`~openhelix_core.models.system2.System2Processor`.
        reports: ``{"llava", "system2_heads"}`` :class:`KeyMapping` reports.
    """

    model: Any
    processor: Any
    reports: dict[str, KeyMapping]


@dataclass
class ReleaseSystem1:
    """System 1 read from a release.

    Attributes:
        model: the :class:`~openhelix_core.models.system1.DiffuserActor` (eval mode).
        report: the :class:`KeyMapping` of ``policy.pth``.
        metadata: entries of ``policy.pth`` besides ``weight`` (``iter``, ``best_loss``; the
            optimizer state is dropped).
    """

    model: Any
    report: KeyMapping
    metadata: dict[str, Any]


@dataclass
class OpenHelixRelease:
    """Ready-to-run models read from a published OpenHelix variant.

    Attributes:
        variant: ``"prompt_tuning"`` or ``"prompt_tuning_aux"``.
        system2: the :class:`~openhelix_core.models.system2.System2Planner` (eval mode).
        processor: its :class:`~openhelix_core.models.system2.System2Processor`.
        system1: the :class:`~openhelix_core.models.system1.DiffuserActor` (eval mode).
        reports: ``{"llava", "system2_heads", "system1"}`` :class:`KeyMapping` reports.
        policy_metadata: entries of ``policy.pth`` besides ``weight`` (``iter``, ``best_loss``;
            the optimizer state is dropped).
    """

    variant: str
    system2: Any
    processor: Any
    system1: Any
    reports: dict[str, KeyMapping]
    policy_metadata: dict[str, Any]


def _variant_dir(directory: Path, variant: str) -> Path:
    if variant not in OPENHELIX_VARIANTS:
        raise ValueError(f"variant must be one of {OPENHELIX_VARIANTS}, got {variant!r}")
    if not directory.is_dir():
        raise FileNotFoundError(f"OpenHelix release directory {str(directory)!r} does not exist")
    if (directory / variant).is_dir():
        return directory / variant
    if directory.name in OPENHELIX_VARIANTS and directory.name != variant:
        raise ValueError(f"{str(directory)!r} is the {directory.name!r} folder, but variant {variant!r} was asked for")
    if directory.name == variant or (directory / POLICY_FILE).is_file() or (directory / PLANNER_SHARD_DIR).is_dir():
        return directory
    raise FileNotFoundError(f"{str(directory)!r} has no {variant!r} folder (expected {variant}/{POLICY_FILE})")


def _planner_source(folder: Path) -> Path:
    """System 2's weights in a variant folder: the shard folder, else a merged ``pytorch_model.bin``."""
    shard_dir = folder / PLANNER_SHARD_DIR
    if shard_dir.is_dir():
        return shard_dir
    if (folder / BIN_WEIGHTS).is_file():
        return folder / BIN_WEIGHTS
    raise FileNotFoundError(
        f"OpenHelix release is missing {str(shard_dir)!r} (System 2 weights; or a merged {BIN_WEIGHTS})"
    )


def _find_tokenizer(folder: Path):
    """The planner's tokenizer from the variant folder, its shard folder or the release root.

    A sentencepiece ``tokenizer.model`` is read with the slow-LLaMA-exact tokenizer OpenHelix
    trained with; if the folder lists no added tokens (``tokenizer.model`` alone, as the
    LLaMA weights ship it), LLaVA-Lightning's ``<im_patch>``, ``<im_start>``, ``<im_end>`` are
    added first, so ``<ACT>`` gets id 32003 as in training. A folder with only a fast
    ``tokenizer.json`` is read with ``AutoTokenizer``.
    """
    candidates = (folder, folder / PLANNER_SHARD_DIR, folder.parent)
    for candidate in candidates:
        if has_sentencepiece_model(candidate):
            return complete_lightning_vocabulary(LlamaSentencePieceTokenizer.from_directory(candidate))
    for candidate in candidates:
        if (candidate / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(candidate), local_files_only=True)
    raise FileNotFoundError(
        f"no tokenizer in {', '.join(repr(str(c)) for c in candidates)}: put the LLaVA-7B-Lightening-v1-1 "
        "tokenizer.model there (OpenHelix adds <ACT> to it as id 32003), or pass tokenizer="
    )


def load_release_system2(
    directory: str | os.PathLike,
    variant: str = "prompt_tuning_aux",
    *,
    architecture: str | ReleaseArchitecture = "openhelix",
    tokenizer=None,
    allow_unexpected: bool = False,
    device: str | torch.device = "cpu",
) -> ReleaseSystem2:
    """System 2 of a local copy of the Hugging Face repo ``OpenHelix/openhelix`` (one variant):
    the planner shards only, so a planner node never reads ``policy.pth``.

    Args:
        directory: the snapshot root or the variant folder (layout: :func:`load_openhelix_release`).
        variant: ``"prompt_tuning"`` or ``"prompt_tuning_aux"``.
        architecture: ``"openhelix"`` (default), ``"tiny"`` or a :class:`ReleaseArchitecture`.
            Its System 2 config must match the shards (checked key by key and shape by shape);
            ``image_token_index`` is taken from the tokenizer's id of ``image_token``.
        tokenizer: the LLaVA-Lightning tokenizer; ``<ACT>`` is added when absent. Default: the
            tokenizer files in the variant folder or in ``llava_ckpt_safetensors/``.
        allow_unexpected: load even if the shards hold keys nothing maps to (they stay listed
            in the reports).
        device: where the planner goes.

    Raises:
        FileNotFoundError naming the missing folder, shard or tokenizer;
        :class:`CheckpointError` (missing / unexpected / shape-mismatched keys, inconsistent
        shards); ValueError on a vocabulary mismatch or an unknown variant / architecture.
    """
    architecture = _architecture(architecture)
    folder = _variant_dir(Path(directory), variant)
    planner_source = _planner_source(folder)
    if tokenizer is None:
        tokenizer = _find_tokenizer(folder)
    config = architecture.system2
    tokenizer = ensure_act_token(tokenizer, config.act_token)
    raw = load_llava_state_dict(planner_source)
    converted = convert_llava_keys(raw, "auto")
    embed_key = "model.language_model.embed_tokens.weight"
    if embed_key not in converted.tensors:
        raise CheckpointError(f"{str(planner_source)!r} has no input embedding table (model.embed_tokens.weight)")
    rows = int(converted.tensors[embed_key].shape[0])
    check_vocabulary(tokenizer, rows, architecture.vocab_size, act_token=config.act_token,
                     act_token_id=architecture.act_token_id)

    heads, head_report = openhelix_head_state_dict(raw, act_token_row=architecture.act_token_id,
                                                   source=str(planner_source))
    image_id = tokenizer.convert_tokens_to_ids(config.image_token)
    llava_dict = dict(config.llava_config)
    llava_dict["image_token_index"] = int(image_id)
    config = replace(
        config,
        llava_config=llava_dict,
        aux_activation="identity",
        aux_hidden_dim=int(heads["aux_head.trunk.weight"].shape[0]) if "aux_head.trunk.weight" in heads else config.aux_hidden_dim,
        goal_dim=int(heads["projection.weight"].shape[0]),
    )
    from transformers import LlavaConfig

    dtype = _DTYPES[config.torch_dtype]
    llava, llava_report = llava_from_state(
        LlavaConfig(**config.llava_config), converted, dtype=dtype,
        attn_implementation=resolve_attn_implementation(config.attn_implementation, device, dtype),
        source=str(planner_source), allow_unexpected=allow_unexpected)
    planner = System2Planner(config, llava=llava, tokenizer=tokenizer, device=None)
    own = dict(planner.named_trainable_parameters())
    missing_aux = sorted(k for k in own if k not in heads)
    if missing_aux:
        if variant == "prompt_tuning_aux" or any(not k.startswith("aux_head.") for k in missing_aux):
            head_report.missing = missing_aux
            head_report.raise_if_incomplete("the System 2 heads")
        for key in missing_aux:  # the non-aux variant may not store the auxiliary head
            heads[key] = own[key].detach().clone()
            head_report.derived[key] = "not in this variant: seeded initialisation (unused by the goal)"
    planner.load_trainable_state_dict(heads)
    planner = planner.to(device).eval()
    processor = System2Processor(config, planner.tokenizer, build_image_processor(config),
                                 num_image_tokens=planner.num_image_tokens)
    return ReleaseSystem2(model=planner, processor=processor,
                          reports={"llava": llava_report, "system2_heads": head_report})


def load_release_system1(
    directory: str | os.PathLike,
    variant: str = "prompt_tuning_aux",
    *,
    architecture: str | ReleaseArchitecture = "openhelix",
    normalization=None,
    allow_unexpected: bool = False,
    device: str | torch.device = "cpu",
) -> ReleaseSystem1:
    """System 1 of a local copy of ``OpenHelix/openhelix`` (one variant): ``policy.pth`` only,
    so a controller node never reads the 7B planner.

    Args:
        directory: the snapshot root or the variant folder (layout: :func:`load_openhelix_release`).
        variant: ``"prompt_tuning"`` or ``"prompt_tuning_aux"``.
        architecture: ``"openhelix"`` (default), ``"tiny"`` or a :class:`ReleaseArchitecture`
            whose System 1 config the weights must match key by key and shape by shape.
        normalization: workspace statistics; default
            :meth:`Normalization.openhelix_calvin` (OpenHelix's CALVIN ABC->D bounds, with the
            predicted absolute positions clipped to CALVIN's position bounds as OpenHelix's
            evaluation does).
        allow_unexpected: load even if ``policy.pth`` holds keys nothing maps to (they stay
            listed in the report).
        device: where the model goes.

    Raises:
        FileNotFoundError naming the missing folder or ``policy.pth``; :class:`CheckpointError`
        (missing / unexpected / shape-mismatched keys); ValueError on an unknown variant /
        architecture.
    """
    architecture = _architecture(architecture)
    folder = _variant_dir(Path(directory), variant)
    policy_path = folder / POLICY_FILE
    if not policy_path.is_file():
        raise FileNotFoundError(f"OpenHelix release is missing {str(policy_path)!r} (System 1 weights)")
    weights, extra = read_policy_checkpoint(policy_path)
    actor = DiffuserActor(architecture.system1, normalization or Normalization.openhelix_calvin())
    policy_state = map_original_state_dict(weights)
    report = actor.load_checked_state_dict(
        policy_state.tensors, source=str(policy_path), ignore_unexpected=allow_unexpected,
        origins=policy_state.origins, ignored=policy_state.ignored)
    actor = actor.to(device).eval()
    return ReleaseSystem1(model=actor, report=report, metadata={k: v for k, v in extra.items() if k != "optimizer"})


def load_openhelix_release(
    directory: str | os.PathLike,
    variant: str = "prompt_tuning_aux",
    *,
    architecture: str | ReleaseArchitecture = "openhelix",
    tokenizer=None,
    normalization=None,
    allow_unexpected: bool = False,
    device: str | torch.device = "cpu",
) -> OpenHelixRelease:
    """Both systems of a local copy of the Hugging Face repo ``OpenHelix/openhelix`` (one
    variant): :func:`load_release_system1`, then :func:`load_release_system2`.

    Expected layout (``directory`` may also be the variant folder itself)::

        directory/
          prompt_tuning/ or prompt_tuning_aux/
            policy.pth                   System 1: {"weight": DDP state dict ("module." keys),
                                         "optimizer", "iter", "best_loss"} (torch.save)
            llava_ckpt_safetensors/      System 2: the LISAForCausalLM state dict, LLaVA-Lightning
              *.safetensors              names, in shards; model.safetensors.index.json is used
              [model.safetensors.index.json]   when present, otherwise every shard is read
            [pytorch_model.bin]          the same merged into one file (OpenHelix README), used
                                         when llava_ckpt_safetensors/ is absent
            [tokenizer files]            optional; otherwise pass ``tokenizer``

    The arguments are those of the two loaders. Raises what they raise.
    """
    system1 = load_release_system1(directory, variant, architecture=architecture, normalization=normalization,
                                   allow_unexpected=allow_unexpected, device=device)
    system2 = load_release_system2(directory, variant, architecture=architecture, tokenizer=tokenizer,
                                   allow_unexpected=allow_unexpected, device=device)
    return OpenHelixRelease(
        variant=variant, system2=system2.model, processor=system2.processor, system1=system1.model,
        reports={**system2.reports, "system1": system1.report}, policy_metadata=system1.metadata,
    )


__all__ = [
    "BIN_INDEX", "BIN_WEIGHTS", "LLAVA_LAYOUTS", "LOAD_ERRORS",
    "OPENHELIX_ACT_TOKEN_ID", "OPENHELIX_VARIANTS", "OPENHELIX_VOCAB_SIZE", "OpenHelixRelease", "PLANNER_SHARD_DIR",
    "POLICY_FILE", "RELEASE_ARCHITECTURES", "ReleaseArchitecture", "ReleaseSystem1", "ReleaseSystem2", "SAFE_INDEX",
    "SAFE_WEIGHTS", "check_vocabulary", "convert_llava_keys", "detect_llava_layout", "llava_from_state",
    "load_llava_state_dict", "load_openhelix_release", "load_release_system1", "load_release_system2",
    "read_policy_checkpoint", "read_tensor_file", "release_architecture", "release_model_id",
]
