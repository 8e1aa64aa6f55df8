"""Configuration of System 2, the OpenHelix LLaVA planner.

System 2 runs a frozen LLaVA over one camera image and a prompt that asks it to control
the robot; the last-layer hidden state at a single learnable ``<ACT>`` token is projected
to the goal vector System 1 is conditioned on. This module holds only the plain-data
configuration; it imports neither torch nor transformers, so the ROS nodes can read and
validate a configuration cheaply.

Prompt structure (from the OpenHelix code in OpenHelix-robot/OpenHelix: the ``llava_v1``
conversation of ``datasets/model/conversation.py``, the questions of
``datasets/utils_llcb.py`` drawn at random per sample by ``datasets/calvin_dataset.py::transfer``,
and ``input_processing_real_batch`` of
``online_evaluation_calvin/evaluate_policy_lcb_pt_act_simple_asy10.py``, which cuts the
conversation after ``ASSISTANT:`` and appends `` <ACT>``): the system sentence, ``USER:``, the
image, a newline, one of the questions ``Can you <instruction>?`` / ``Can you control the robot
to <instruction>?``, ``ASSISTANT:`` and the ``<ACT>`` token, which is the last token of the
sequence. OpenHelix wraps the image in ``<im_start>``/``<im_end>`` because its
LLaVA-Lightning checkpoint was trained that way; LLaVA-1.5 (the default here, as converted for
transformers) has no such tokens, so the default template puts the bare ``<image>``
placeholder there. How the prompt becomes token ids is in :mod:`.processor_system2`.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...configuration import config_from_dict

#: System sentence of the ``llava_v1`` conversation template used by OpenHelix.
DEFAULT_SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

#: Prompt template. ``{system}``, ``{image}``, ``{question}`` and ``{act}`` are each replaced
#: once; ``{act}`` must end the template so ``<ACT>`` is the last token. A template may spell
#: its one question itself with ``{instruction}`` in place of ``{question}``.
DEFAULT_PROMPT_TEMPLATE = "{system} USER: {image}\n{question} ASSISTANT: {act}"

#: OpenHelix's questions (``LONG_QUESTION_LIST``), one drawn at random per sample in training
#: and, by default, per call at inference, as its CALVIN evaluation does.
OPENHELIX_QUESTIONS = ("Can you {instruction}?", "Can you control the robot to {instruction}?")
#: ``inference_question`` value that draws a question per call (seeded by ``seed``).
RANDOM_QUESTION = "random"

_PLACEHOLDERS = ("{system}", "{image}", "{act}")
_DTYPES = ("float32", "bfloat16", "float16")
_ATTN = ("auto", "sdpa", "eager", "flash_attention_2")
_AUX_ACTIVATIONS = ("gelu", "relu", "identity")
_PADDING_SIDES = ("left", "right")
_ACT_INITS = ("mean", "normal")
_QUANTIZATIONS = ("none", "int8_dynamic")


def _llava_15_7b_architecture() -> dict[str, Any]:
    """LLaVA-1.5-7B as converted for transformers (``llava-hf/llava-1.5-7b-hf``).

    Vicuna-7B language model (Llama: hidden 4096, 32 layers, 32 heads, MLP 11008, vocab
    padded to 32064), CLIP ViT-L/14 vision tower at 336 px (576 patches, features from the
    second-to-last layer, CLS dropped), two-layer GELU projector, ``<image>`` = id 32000.
    """
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": 32064,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "pad_token_id": 32001,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        "image_token_index": 32000,
        "image_seq_length": 576,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }


def _llava_lightning_7b_architecture() -> dict[str, Any]:
    """LLaVA-7B-Lightening-v1-1 as used by OpenHelix, expressed as a transformers LlavaConfig.

    LLaMA-7B text model (hidden 4096, 32 layers, 32 heads, MLP 11008) with the vocabulary
    OpenHelix trains with (LLaVA-Lightning tokenizer + ``<ACT>`` = 32004 rows); CLIP
    ViT-L/14 at 224 px (``clip-vit-large-patch14``: 256 patches), features from the
    second-to-last layer with CLS dropped (LLaVA ``mm_vision_select_layer=-2``, ``patch``);
    LLaVA-Lightning's projector is a single Linear, represented exactly as ``linear_1`` +
    identity ``linear_2`` with ``projector_hidden_act="linear"``. ``image_token_index`` is
    replaced by the tokenizer's id of the image token when the release is loaded.
    ``max_position_embeddings`` (2048) and ``rms_norm_eps`` (1e-6) are LLaMA-1 values, not
    read from the release (no config.json could be checked).
    """
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": 32004,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-6,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        "image_token_index": 32000,
        "image_seq_length": 256,
        "projector_hidden_act": "linear",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }


#: OpenHelix's prompt: LLaVA-Lightning wraps the image in <im_start>/<im_end>.
OPENHELIX_PROMPT_TEMPLATE = "{system} USER: <im_start>{image}<im_end>\n{question} ASSISTANT: {act}"


def _tiny_architecture(vocab_size: int) -> dict[str, Any]:
    """A LLaVA small enough for unit tests: hidden 32, two layers each side, 32 px images."""
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        "image_token_index": 4,
        "image_seq_length": 16,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
    }


@dataclass
class System2Config:
    """Everything needed to rebuild a System 2 planner (apart from trained weights).

    Attributes:
        llava_path: local directory of a transformers LLaVA checkpoint
            (``LlavaForConditionalGeneration`` weights, its tokenizer and image processor).
            Never a hub id: nothing is downloaded. ``None`` builds the LLaVA from
            ``llava_config`` with random weights (tests, benchmarks).
        llava_config: LLaVA architecture as a ``LlavaConfig`` dict (``text_config``,
            ``vision_config``, ``image_token_index``, ...). Required when ``llava_path`` is
            ``None``; when both are given the checkpoint's hidden size and image geometry
            are checked against it.
        seed: seed of the random initialisation (the LLaVA when built from
            ``llava_config``, and the trainable ``<ACT>`` row, projection and aux head).
        goal_dim: size of the goal vector handed to System 1 (512 in OpenHelix).
        act_token: text of the learnable action token appended after the instruction.
        image_token: text of the image placeholder; it must be the tokenizer token whose id
            is the LLaVA's ``image_token_index``. The processor expands it to one token per
            image feature.
        system_prompt: system sentence placed at ``{system}`` in the template.
        prompt_template: prompt with ``{system}``, ``{image}``, ``{question}`` and ``{act}``
            each exactly once, ending with ``{act}``; or with ``{instruction}`` in place of
            ``{question}`` for a template that spells its one question itself.
        question_templates: the questions ``{question}`` stands for, each with
            ``{instruction}`` once (default: OpenHelix's two). Training draws one at random
            per sample from a seeded generator, as OpenHelix does.
        inference_question: which question a call at inference uses: ``"random"`` (a seeded
            draw per call, OpenHelix's evaluation) or the index of one template (always the
            same prompt for the same instruction).
        aux_hidden_dim: width of the auxiliary head's hidden layer; ``None`` means half the
            LLaVA hidden size, as in OpenHelix (``pred_act_mlps``: hidden -> hidden // 2).
        aux_activation: nonlinearity after that layer: ``"gelu"``, ``"relu"`` or
            ``"identity"`` (OpenHelix applies none; its checkpoints load with ``identity``).
        act_init: initial value of the ``<ACT>`` embedding: ``"mean"`` of the LLaVA's input
            embedding rows, or ``"normal"`` (std = that of the embedding matrix).
        attn_implementation: attention kernel of the LLaVA: ``"auto"`` (``flash_attention_2``
            when the ``flash_attn`` package is importable and the model runs on a GPU,
            ``sdpa`` otherwise), ``"sdpa"``, ``"eager"`` or ``"flash_attention_2"``.
        torch_dtype: dtype of the frozen LLaVA: ``"float32"``, ``"bfloat16"`` or
            ``"float16"``. Trainable parts always stay float32.
        image_size: side in pixels of the square image the vision tower reads (336 for
            LLaVA-1.5); must match the vision tower.
        padding_side: where the processor pads shorter prompts in a batch, ``"right"``
            (as OpenHelix) or ``"left"``; the planner handles either.
        prefix_cache: reuse the key/values of the prompt tokens before the image (the
            system sentence and ``USER:``, the same for every call) instead of recomputing
            them: they are computed once per prefix and weights, and each call runs the
            language model on the image, question and ``<ACT>`` only. The goal equals the
            full forward's to float rounding (``forward(..., use_prefix_cache=False)`` is
            that reference path).
        quantization: ``"none"`` or ``"int8_dynamic"``: int8 weights with per-call
            activation quantization for every Linear of the LLaVA's language model (CPU
            only, ``torch_dtype="float32"``). It trades goal fidelity for CPU latency;
            ``benchmarks/bench_system2.py --int8`` reports both.
    """

    llava_path: str | None = None
    llava_config: dict[str, Any] | None = None
    seed: int = 0
    goal_dim: int = 512
    act_token: str = "<ACT>"
    image_token: str = "<image>"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    question_templates: tuple[str, ...] = OPENHELIX_QUESTIONS
    inference_question: str | int = RANDOM_QUESTION
    aux_hidden_dim: int | None = None
    aux_activation: str = "gelu"
    act_init: str = "mean"
    attn_implementation: str = "auto"
    torch_dtype: str = "float32"
    image_size: int = 336
    padding_side: str = "right"
    prefix_cache: bool = True
    quantization: str = "none"

    def __post_init__(self) -> None:
        if self.llava_path is not None:
            if not isinstance(self.llava_path, (str, Path)) or not str(self.llava_path).strip():
                raise ValueError("llava_path must be a non-empty directory path or None")
            self.llava_path = str(self.llava_path)
        if self.llava_config is not None:
            if not isinstance(self.llava_config, dict):
                raise ValueError("llava_config must be a dict (LlavaConfig.to_dict()) or None")
            for key in ("text_config", "vision_config"):
                if not isinstance(self.llava_config.get(key), dict):
                    raise ValueError(f"llava_config must contain a dict under {key!r}")
            vision_size = self.llava_config["vision_config"].get("image_size")
            if vision_size is not None and vision_size != self.image_size:
                raise ValueError(
                    f"image_size={self.image_size} does not match "
                    f"llava_config['vision_config']['image_size']={vision_size}"
                )
        if self.llava_path is None and self.llava_config is None:
            raise ValueError("llava_path or llava_config: one of them is required")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.goal_dim, int) or isinstance(self.goal_dim, bool) or self.goal_dim <= 0:
            raise ValueError(f"goal_dim must be a positive int, got {self.goal_dim!r}")
        for name in ("act_token", "image_token"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or value != value.strip():
                raise ValueError(f"{name} must be a non-empty string without surrounding spaces")
        if self.act_token == self.image_token:
            raise ValueError("act_token and image_token must differ")
        if not isinstance(self.system_prompt, str):
            raise ValueError("system_prompt must be a string")
        self._validate_template()
        if self.aux_hidden_dim is not None and (
            not isinstance(self.aux_hidden_dim, int)
            or isinstance(self.aux_hidden_dim, bool)
            or self.aux_hidden_dim <= 0
        ):
            raise ValueError(f"aux_hidden_dim must be a positive int or None, got {self.aux_hidden_dim!r}")
        if self.aux_activation not in _AUX_ACTIVATIONS:
            raise ValueError(f"aux_activation must be one of {_AUX_ACTIVATIONS}, got {self.aux_activation!r}")
        if self.act_init not in _ACT_INITS:
            raise ValueError(f"act_init must be one of {_ACT_INITS}, got {self.act_init!r}")
        if self.attn_implementation not in _ATTN:
            raise ValueError(f"attn_implementation must be one of {_ATTN}, got {self.attn_implementation!r}")
        if self.torch_dtype not in _DTYPES:
            raise ValueError(f"torch_dtype must be one of {_DTYPES}, got {self.torch_dtype!r}")
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {self.image_size!r}")
        if self.padding_side not in _PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {_PADDING_SIDES}, got {self.padding_side!r}")
        if not isinstance(self.prefix_cache, bool):
            raise ValueError(f"prefix_cache must be a bool, got {self.prefix_cache!r}")
        if self.quantization not in _QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {_QUANTIZATIONS}, got {self.quantization!r}")
        if self.quantization == "int8_dynamic" and self.torch_dtype != "float32":
            raise ValueError("quantization='int8_dynamic' quantizes a float32 LLaVA; set torch_dtype='float32' "
                             f"(got {self.torch_dtype!r})")

    def _validate_template(self) -> None:
        template = self.prompt_template
        if not isinstance(template, str):
            raise ValueError("prompt_template must be a string")
        for placeholder in _PLACEHOLDERS:
            count = template.count(placeholder)
            if count != 1:
                raise ValueError(
                    f"prompt_template must contain {placeholder} exactly once (found {count})"
                )
        questions, instructions = template.count("{question}"), template.count("{instruction}")
        if questions + instructions != 1:
            raise ValueError("prompt_template must contain {question} (or a fixed question with {instruction}) "
                             f"exactly once (found {questions} {{question}}, {instructions} {{instruction}})")
        if not template.endswith("{act}"):
            raise ValueError("prompt_template must end with {act} so <ACT> is the last token")
        if isinstance(self.question_templates, str) or not isinstance(self.question_templates, (list, tuple)):
            raise ValueError("question_templates must be a list of strings")
        self.question_templates = tuple(self.question_templates)
        if not self.question_templates:
            raise ValueError("question_templates must not be empty")
        for index, question in enumerate(self.question_templates):
            if not isinstance(question, str) or question.count("{instruction}") != 1:
                raise ValueError(f"question_templates[{index}] must be a string with {{instruction}} exactly once")
            try:
                question.format(instruction="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"question_templates[{index}] is not a valid format string: {exc}") from exc
        choice = self.inference_question
        if choice != RANDOM_QUESTION and not (
            isinstance(choice, int) and not isinstance(choice, bool) and 0 <= choice < len(self.question_templates)
        ):
            raise ValueError(f"inference_question must be {RANDOM_QUESTION!r} or an index below "
                             f"{len(self.question_templates)}, got {choice!r}")
        for token in (self.act_token, self.image_token):
            for text in (template, self.system_prompt, *self.question_templates):
                if token in text:
                    raise ValueError(
                        f"prompt_template/system_prompt/question_templates must not spell {token!r} "
                        "literally; use the {act}/{image} placeholders"
                    )
        try:
            self.render_prompt("x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"prompt_template is not a valid format string: {exc}") from exc

    # ------------------------------------------------------------------ prompt
    @property
    def asks_question(self) -> bool:
        """Whether the template has a ``{question}`` slot (else it spells its one question)."""
        return "{question}" in self.prompt_template

    def render_prompt(self, instruction: str, question_index: int = 0) -> str:
        """The full prompt for one (already normalised) instruction, one image placeholder,
        asking ``question_templates[question_index]`` (ignored by a fixed-question template)."""
        if not 0 <= question_index < len(self.question_templates):
            raise ValueError(f"question_index must be below {len(self.question_templates)}, got {question_index}")
        question = self.question_templates[question_index].format(instruction=instruction)
        return self.prompt_template.format(
            system=self.system_prompt,
            image=self.image_token,
            instruction=instruction,
            question=question,
            act=self.act_token,
        )

    # ------------------------------------------------------------------ presets
    @classmethod
    def llava_7b(cls, llava_path: str | Path | None, **overrides: Any) -> "System2Config":
        """LLaVA-1.5-7B (transformers format) read from the local directory ``llava_path``.

        Hidden size 4096 -> 512-D goal, 336 px CLIP ViT-L/14 tower (576 image tokens),
        bfloat16 weights as in OpenHelix. ``llava_config`` holds the expected architecture
        and is checked against the checkpoint when it is loaded.
        """
        values: dict[str, Any] = dict(
            llava_path=None if llava_path is None else str(llava_path),
            llava_config=_llava_15_7b_architecture(),
            goal_dim=512,
            torch_dtype="bfloat16",
            image_size=336,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def openhelix_lightning(cls, **overrides: Any) -> "System2Config":
        """The published OpenHelix planner: LLaVA-7B-Lightening-v1-1 (224 px CLIP ViT-L/14,
        single-linear projector, 32004-token vocabulary), bfloat16, OpenHelix's prompt with
        ``<im_patch>`` as the image placeholder token (any single token works: placeholder
        positions receive image features). Used by
        :func:`openhelix_core.checkpoints.load_openhelix_release`.
        """
        values: dict[str, Any] = dict(
            llava_path=None,
            llava_config=_llava_lightning_7b_architecture(),
            goal_dim=512,
            torch_dtype="bfloat16",
            image_size=224,
            image_token="<im_patch>",
            prompt_template=OPENHELIX_PROMPT_TEMPLATE,
            aux_activation="identity",
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def tiny(cls, seed: int = 0, **overrides: Any) -> "System2Config":
        """Random-weight tiny LLaVA (hidden 32, 32x32 images, 16 image tokens) for tests; it
        always asks the second question, so repeated calls give the same goal."""
        from .tiny_tokenizer import TINY_VOCAB_SIZE

        values: dict[str, Any] = dict(
            llava_path=None,
            llava_config=_tiny_architecture(TINY_VOCAB_SIZE),
            seed=seed,
            goal_dim=512,
            torch_dtype="float32",
            attn_implementation="sdpa",
            image_size=32,
            inference_question=1,
        )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of every field."""
        data = copy.deepcopy(asdict(self))
        data["question_templates"] = list(self.question_templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "System2Config":
        """Inverse of :meth:`to_dict`; unknown keys are an error (ValueError naming them)."""
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
