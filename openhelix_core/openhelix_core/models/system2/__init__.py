"""System 2 of OpenHelix: frozen LLaVA + learnable ``<ACT>`` token -> 512-D goal.

Typical use (ROS planner node)::

    planner, processor = load_system2(checkpoint_dir, preset="llava_7b", llava_path=path, device="cuda")
    goal = plan_goal(planner, processor, rgb_image, "open the drawer")  # (512,) float32
"""
from .configuration_system2 import (
    DEFAULT_PROMPT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    OPENHELIX_PROMPT_TEMPLATE,
    OPENHELIX_QUESTIONS,
    RANDOM_QUESTION,
    System2Config,
)
from .modeling_system2 import (
    OPENHELIX_KEY_MAP,
    System2Output,
    System2Planner,
    compute_aux_loss,
    convert_openhelix_state_dict,
    load_openhelix_state_dict,
    openhelix_head_state_dict,
    resolve_attn_implementation,
)
from .processor_system2 import (
    System2Processor,
    build_image_processor,
    build_tiny_system2,
    load_system2,
    normalize_instruction,
    plan_goal,
    processor_for,
    tokenize_with_image,
)
from .tiny_tokenizer import build_tiny_tokenizer
from .tokenization_system2 import LIGHTNING_IMAGE_TOKENS, LlamaSentencePieceTokenizer, complete_lightning_vocabulary

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "LIGHTNING_IMAGE_TOKENS",
    "LlamaSentencePieceTokenizer",
    "OPENHELIX_KEY_MAP",
    "OPENHELIX_PROMPT_TEMPLATE",
    "OPENHELIX_QUESTIONS",
    "RANDOM_QUESTION",
    "System2Config",
    "System2Output",
    "System2Planner",
    "System2Processor",
    "build_image_processor",
    "build_tiny_system2",
    "build_tiny_tokenizer",
    "complete_lightning_vocabulary",
    "compute_aux_loss",
    "convert_openhelix_state_dict",
    "load_openhelix_state_dict",
    "load_system2",
    "normalize_instruction",
    "openhelix_head_state_dict",
    "plan_goal",
    "processor_for",
    "resolve_attn_implementation",
    "tokenize_with_image",
]
