"""Turns camera images and instructions into System 2 inputs; loaders used by the ROS node.

The processor renders the OpenHelix prompt (see :mod:`.configuration_system2`) and tokenises
it as OpenHelix's ``tokenizer_image_token`` (``model/llava/mm_utils.py``) does: the text
before and the text after the image placeholder are tokenised separately, each as a whole
prompt (with ``<s>``), and joined around one image position with the second ``<s>`` dropped.
With the sentencepiece tokenizer of :mod:`.tokenization_system2` the ids are exactly
OpenHelix's. The image position is then expanded to one token per image feature the LLaVA
produces, as transformers 5.x expects: ``(S / patch)^2`` tokens with the ``default`` feature
strategy (CLS dropped), one more with ``full`` (256 for LLaVA-Lightning at 224 px, 576 for
LLaVA-1.5 at 336 px, 16 for the tiny config).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .configuration_system2 import RANDOM_QUESTION, System2Config
from .modeling_system2 import System2Planner, reserved_token_texts, resolve_llava_config, token_id

# CLIP's (OpenAI) normalisation, as used by LLaVA-1.5's image processor.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_STRIP = " \t\r\n.!?;,"


def build_image_processor(config: System2Config):
    """Image processor for ``config``: the checkpoint's own (local files only) when
    ``llava_path`` is set, else a CLIP processor built in code (resize shortest edge to
    ``image_size``, centre crop, CLIP mean/std)."""
    if config.llava_path is not None:
        from transformers import AutoImageProcessor

        directory = Path(config.llava_path)
        if not directory.is_dir():
            raise FileNotFoundError(f"llava_path {str(directory)!r} is not an existing local directory")
        return AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as processor_class
    size = config.image_size
    return processor_class(
        do_resize=True,
        size={"shortest_edge": size},
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def normalize_instruction(instruction: str) -> str:
    """Strip surrounding whitespace and trailing punctuation: the question adds the ``?``.
    (OpenHelix inserts CALVIN's annotations as they are; they carry neither.)"""
    return instruction.strip().rstrip(_STRIP).strip()


def tokenize_with_image(tokenizer, text: str, image_text: str, image_token_id: int) -> list[int]:
    """Ids of ``text`` with ``image_token_id`` once where ``image_text`` stands, tokenised as
    OpenHelix's ``tokenizer_image_token``: each side of the placeholder on its own, the
    second side's leading ``<s>`` dropped. Without a placeholder: the text as a whole.

    Raises:
        ValueError when ``image_text`` occurs more than once.
    """
    chunks = text.split(image_text)
    if len(chunks) > 2:
        raise ValueError(f"the prompt holds {len(chunks) - 1} image placeholders {image_text!r}, expected 1")
    encoded = [list(tokenizer(chunk, add_special_tokens=True)["input_ids"]) for chunk in chunks]
    bos = tokenizer.bos_token_id
    if len(encoded) == 1:
        return encoded[0]
    before, after = encoded
    if before and before[0] == bos and after and after[0] == bos:
        after = after[1:]
    return before + [image_token_id] + after


class System2Processor:
    """Builds ``pixel_values``, ``input_ids`` and ``attention_mask`` for :class:`System2Planner`.

    Args:
        config: the planner's :class:`System2Config` (prompt template, tokens, image size).
        tokenizer: the planner's tokenizer (``planner.tokenizer``; holds ``<ACT>``).
        image_processor: CLIP-style image processor (see :func:`build_image_processor`).
        num_image_tokens: image features per image; derived from the LLaVA configuration
            when ``None``.
    """

    def __init__(self, config: System2Config, tokenizer, image_processor, num_image_tokens: int | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.act_token_id = token_id(tokenizer, config.act_token)
        self.image_token_id = token_id(tokenizer, config.image_token)
        if num_image_tokens is None:
            llava_config = resolve_llava_config(config)
            vision = llava_config.vision_config
            num_image_tokens = (vision.image_size // vision.patch_size) ** 2
            if llava_config.vision_feature_select_strategy != "default":
                num_image_tokens += 1
        if num_image_tokens <= 0:
            raise ValueError(f"num_image_tokens must be positive, got {num_image_tokens}")
        self.num_image_tokens = int(num_image_tokens)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
        self.pad_token_id = int(pad)
        self.reserved_tokens = reserved_token_texts(tokenizer) | {config.act_token, config.image_token}
        self._question_rng = random.Random(config.seed)

    # ------------------------------------------------------------------ text
    def build_prompt(self, instruction: str, question_index: int = 0) -> str:
        """The prompt text for one instruction (one image placeholder, ``<ACT>`` last)."""
        return self.config.render_prompt(normalize_instruction(instruction), question_index)

    def choose_questions(self, count: int) -> list[int]:
        """Question indices for ``count`` prompts at inference: ``config.inference_question``,
        or seeded draws when it is ``"random"`` (a fixed-question template always gets 0)."""
        choice = self.config.inference_question
        if not self.config.asks_question:
            return [0] * count
        if choice == RANDOM_QUESTION:
            return [self._question_rng.randrange(len(self.config.question_templates)) for _ in range(count)]
        return [int(choice)] * count

    def _validate_instruction(self, index: int, instruction) -> str:
        if not isinstance(instruction, str):
            raise ValueError(f"instructions[{index}] must be a str, got {type(instruction).__name__}")
        cleaned = normalize_instruction(instruction)
        if not cleaned:
            raise ValueError(f"instructions[{index}] is empty")
        for token in sorted(self.reserved_tokens):
            if token in instruction:
                raise ValueError(f"instructions[{index}] must not contain the reserved token {token!r}")
        return cleaned

    def encode_prompt(self, instruction: str, question_index: int = 0) -> list[int]:
        """Token ids of one prompt (``instruction`` already normalised) with the image
        placeholder expanded to ``num_image_tokens`` image tokens."""
        text = self.config.render_prompt(instruction, question_index)
        ids = tokenize_with_image(self.tokenizer, text, self.config.image_token, self.image_token_id)
        eos = self.tokenizer.eos_token_id
        if eos is not None and ids and ids[-1] == eos and eos != self.act_token_id:
            ids = ids[:-1]  # a tokenizer that appends EOS: <ACT> must stay last
        if ids.count(self.image_token_id) != 1:
            raise ValueError(f"prompt tokenised with {ids.count(self.image_token_id)} image tokens, expected 1")
        if not ids or ids[-1] != self.act_token_id or ids.count(self.act_token_id) != 1:
            raise ValueError(f"{self.config.act_token!r} must be the single last token of the prompt")
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.num_image_tokens + ids[at + 1:]

    # ------------------------------------------------------------------ images
    def _validate_image(self, index: int, image) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise ValueError(f"images[{index}] must be a numpy array, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ValueError(f"images[{index}] must have dtype uint8 (RGB 0..255), got {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"images[{index}] must have shape (H, W, 3), got {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"images[{index}] is empty: shape {image.shape}")
        return np.ascontiguousarray(image)

    def __call__(
        self,
        images: Sequence[np.ndarray],
        instructions: Sequence[str],
        padding_side: str | None = None,
        question_indices: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Process a batch.

        Args:
            images: B ``(H, W, 3)`` uint8 RGB arrays (any size; resized and centre-cropped).
            instructions: B non-empty instructions, e.g. ``"open the drawer"``.
            padding_side: ``"left"`` or ``"right"``; ``config.padding_side`` when None.
            question_indices: B indices into ``config.question_templates`` (training draws
                them); :meth:`choose_questions` when None.

        Returns:
            ``pixel_values`` ``(B, 3, S, S)`` float32, ``input_ids`` ``(B, L)`` int64 and
            ``attention_mask`` ``(B, L)`` int64 (0 on padding).
        """
        if isinstance(images, np.ndarray):
            raise ValueError("images must be a list of (H, W, 3) arrays, not a single array")
        if isinstance(instructions, str):
            raise ValueError("instructions must be a list of strings, not a single string")
        images, instructions = list(images), list(instructions)
        if not images:
            raise ValueError("images is empty")
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} images but {len(instructions)} instructions")
        side = padding_side or self.config.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        cleaned = [self._validate_image(i, image) for i, image in enumerate(images)]
        texts = [self._validate_instruction(i, text) for i, text in enumerate(instructions)]

        pixel_values = self.image_processor(images=cleaned, return_tensors="pt")["pixel_values"]
        pixel_values = torch.as_tensor(pixel_values, dtype=torch.float32)
        size = self.config.image_size
        if tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"image processor produced {tuple(pixel_values.shape[1:])}, expected (3, {size}, {size})"
            )

        if question_indices is None:
            question_indices = self.choose_questions(len(texts))
        elif len(question_indices) != len(texts):
            raise ValueError(f"got {len(question_indices)} question indices for {len(texts)} instructions")
        sequences = [self.encode_prompt(text, int(question)) for text, question in zip(texts, question_indices)]
        length = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, ids in enumerate(sequences):
            start = 0 if side == "right" else length - len(ids)
            input_ids[row, start:start + len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, start:start + len(ids)] = 1
        return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------- loaders
def processor_for(planner: System2Planner) -> System2Processor:
    """The processor matching ``planner`` (its configuration, tokenizer and image size)."""
    return System2Processor(
        planner.config,
        planner.tokenizer,
        build_image_processor(planner.config),
        num_image_tokens=planner.num_image_tokens,
    )


def build_tiny_system2(seed: int = 0) -> tuple[System2Planner, System2Processor]:
    """Random-weight tiny planner (hidden 32, 32x32 images) and its processor, in eval mode."""
    planner = System2Planner(System2Config.tiny(seed=seed)).eval()
    return planner, processor_for(planner)


def load_system2(
    checkpoint_dir: str | os.PathLike | None,
    preset: str = "tiny",
    llava_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[System2Planner, System2Processor]:
    """Planner + processor for the ROS planner node and the policy, in eval mode.

    Args:
        checkpoint_dir: a :meth:`System2Planner.save_pretrained` directory, or ``None`` for
            fresh (untrained) ``<ACT>``/projection/aux weights on top of ``preset``.
        preset: ``"tiny"`` or ``"llava_7b"``; used only when ``checkpoint_dir`` is None
            (a checkpoint carries its own configuration).
        llava_path: local LLaVA directory; required for ``llava_7b`` and overrides the
            path recorded in a checkpoint.
        device: torch device.
        seed: seed of the preset's random weights (tiny LLaVA, fresh <ACT>/projection/aux
            head); the global torch RNG is neither used nor disturbed. Ignored with a
            checkpoint, whose weights are fixed.
    """
    if checkpoint_dir is not None:
        planner = System2Planner.from_pretrained(checkpoint_dir, llava_path=llava_path, device=device)
    elif preset == "tiny":
        planner = System2Planner(System2Config.tiny(seed=seed), device=device)
    elif preset == "llava_7b":
        if llava_path is None:
            raise ValueError("preset 'llava_7b' needs llava_path (a local LLaVA-1.5-7B directory)")
        planner = System2Planner(System2Config.llava_7b(llava_path, seed=seed), device=device)
    else:
        raise ValueError(f"preset must be 'tiny' or 'llava_7b', got {preset!r}")
    planner = planner.to(device).eval()
    return planner, processor_for(planner)


def plan_goal(planner: System2Planner, processor: System2Processor, image: np.ndarray, instruction: str) -> np.ndarray:
    """One goal for one ``(H, W, 3)`` uint8 RGB image and instruction: float32 ``(goal_dim,)``."""
    with torch.inference_mode():
        batch = processor([image], [instruction])
        batch = {key: value.to(planner.device) for key, value in batch.items()}
        output = planner(**batch)
    return output.goal[0].float().cpu().numpy().astype(np.float32)
