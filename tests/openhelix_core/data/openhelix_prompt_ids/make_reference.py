"""Writes ``reference_ids.json``: System 2 prompt token ids as OpenHelix's own code produces them.

Run it in a throwaway environment holding OpenHelix's stack, not in the project's::

    python3 -m venv /tmp/oh431
    /tmp/oh431/bin/pip install transformers==4.31.0 tokenizers==0.13.3 sentencepiece protobuf pillow numpy
    # OpenHelix's helpers import torch: any CPU torch on the path will do
    /tmp/oh431/bin/python tests/openhelix_core/data/openhelix_prompt_ids/make_reference.py \
        --openhelix <checkout of OpenHelix-robot/OpenHelix>

The prompts are OpenHelix's: its question templates (``datasets/utils_llcb.py``), its
``llava_v1`` conversation (``datasets/model/conversation.py``), cut after ``ASSISTANT:`` with
`` <ACT>`` appended as its CALVIN evaluation does, and tokenised by its
``tokenizer_image_token`` (``model/llava/mm_utils.py``) -- or by the plain tokenizer when the
prompt has no image -- with transformers 4.31's slow ``LlamaTokenizer`` loaded and extended
as ``planer_utils.Model_init`` does. The tokenizers are the small LLaMA-style ones of
``tests/openhelix_core/llama_tokenizers.py``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/openhelix_core: llama_tokenizers

import llama_tokenizers  # noqa: E402

INSTRUCTIONS = (
    "open the drawer",
    "push the sliding door to the right side",
    "lift the red block from the table",
    "turn on the lightbulb",
    "rotate the pink block to the left",
    "Move the slider to the left",
    "stack the blocks",
    "turn off the light bulb, then wait 42 s",
    "open  the drawer",
    "place the block in the drawer (café)",
)
IMAGE_MARKER = -200  # OpenHelix's IMAGE_TOKEN_INDEX


def load_openhelix(root: Path):
    """OpenHelix's question templates, answer, conversation and tokenizer_image_token."""
    sys.path.insert(0, str(root))
    from datasets.model import conversation as conversation_module
    from datasets.utils_llcb import ANSWER_LIST, LONG_QUESTION_LIST

    # model/llava/__init__.py builds the whole LLaVA model; load only mm_utils and constants.
    package = types.ModuleType("openhelix_llava")
    package.__path__ = [str(root / "model" / "llava")]
    sys.modules["openhelix_llava"] = package
    mm_utils = importlib.import_module("openhelix_llava.mm_utils")
    return LONG_QUESTION_LIST, ANSWER_LIST, conversation_module.conv_llava_v1, mm_utils.tokenizer_image_token


def load_tokenizer(directory: Path, layout: str):
    """As ``planer_utils.Model_init``: slow tokenizer, pad = unk, ``<ACT>`` added as a plain token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), model_max_length=512, padding_side="right",
                                              use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.add_tokens("<ACT>")
    if layout == "lightning":
        tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return tokenizer


def evaluation_prompt(conversation_template, question: str, answer: str) -> str:
    """The conversation OpenHelix builds, cut after ``ASSISTANT:`` with `` <ACT>`` appended."""
    conversation = conversation_template.copy()
    conversation.messages = []
    conversation.append_message(conversation.roles[0], question)
    conversation.append_message(conversation.roles[1], answer)
    first_round = conversation.get_prompt().split(conversation.sep2)[0]
    separator = conversation.sep + conversation.roles[1] + ":"
    return first_round.split(separator)[0] + separator + " <ACT>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openhelix", type=Path, required=True, help="checkout of OpenHelix-robot/OpenHelix")
    parser.add_argument("--out", type=Path, default=HERE / "reference_ids.json")
    args = parser.parse_args()
    import sentencepiece
    import transformers

    questions, answers, conversation_template, tokenizer_image_token = load_openhelix(args.openhelix.resolve())
    lightning_image = "<im_start><image><im_end>\n"
    if not all(question.startswith(lightning_image) for question in questions):
        raise SystemExit(f"unexpected OpenHelix question templates: {questions}")
    image_prefixes = {"lightning": lightning_image, "llava15": "<image>\n"}
    cases = []
    with tempfile.TemporaryDirectory() as scratch:
        for layout, image_prefix in image_prefixes.items():
            tokenizer = load_tokenizer(llama_tokenizers.write_tokenizer_dir(Path(scratch) / layout, layout), layout)
            for index, template in enumerate(questions):
                for with_image in (True, False):
                    question_template = template[len(lightning_image):]
                    if with_image:
                        question_template = image_prefix + question_template
                    for instruction in INSTRUCTIONS:
                        question = question_template.format(sent=instruction)
                        prompt = evaluation_prompt(conversation_template, question, answers[0].format(sent=instruction))
                        if with_image:
                            ids = tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_MARKER)
                        else:
                            ids = tokenizer(prompt).input_ids
                        cases.append({"layout": layout, "question_index": index, "image": with_image,
                                      "instruction": instruction, "prompt": prompt, "input_ids": list(ids)})
            act_id = tokenizer.convert_tokens_to_ids("<ACT>")
            cases.append({"layout": layout, "act_token_id": act_id, "vocabulary_size": len(tokenizer)})
    payload = {
        "generated_by": (f"tests/openhelix_core/data/openhelix_prompt_ids/make_reference.py with transformers "
                         f"{transformers.__version__}, sentencepiece {sentencepiece.__version__}"),
        "image_marker": IMAGE_MARKER,
        "question_templates": [template[len(lightning_image):] for template in questions],
        "vocabulary_sha256": llama_tokenizers.vocabulary_digest(),
        "cases": cases,
    }
    args.out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
