"""System 2's prompt, token for token as OpenHelix feeds it.

The reference ids in ``data/openhelix_prompt_ids/reference_ids.json`` were produced by
OpenHelix's own code (its question templates, conversation and ``tokenizer_image_token``)
with transformers 4.31's slow LLaMA tokenizer, from the tokenizers of ``llama_tokenizers.py``;
``data/openhelix_prompt_ids/make_reference.py`` regenerates them.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import llama_tokenizers
import numpy as np
import pytest
import torch

from openhelix_core.models.system2 import (
    LlamaSentencePieceTokenizer,
    System2Config,
    System2Planner,
    System2Processor,
    build_image_processor,
    complete_lightning_vocabulary,
    tokenize_with_image,
)
from openhelix_core.models.system2.modeling_system2 import ensure_act_token

REFERENCE = json.loads((Path(__file__).parent / "data" / "openhelix_prompt_ids" / "reference_ids.json").read_text())
MARKER = REFERENCE["image_marker"]
PROMPT_CASES = [case for case in REFERENCE["cases"] if "prompt" in case]
VOCABULARIES = {case["layout"]: case for case in REFERENCE["cases"] if "act_token_id" in case}
#: Folder layouts read for each reference tokenizer: the files OpenHelix loads, and the
#: other ways the same vocabulary is shipped.
READ_FROM = {"lightning": ("lightning", "model_only"), "llava15": ("llava15", "llava15_hf")}
#: The image text in the template of each layout (the LLaVA-1.5 template has no <im_start>).
IMAGE_TOKEN = {"lightning": "<im_patch>", "llava15": "<image>"}
TEMPLATE = {"lightning": "{system} USER: <im_start>{image}<im_end>\n{question} ASSISTANT: {act}",
            "llava15": "{system} USER: {image}\n{question} ASSISTANT: {act}"}


def _tokenizer(tmp_path: Path, folder_layout: str) -> LlamaSentencePieceTokenizer:
    tokenizer = LlamaSentencePieceTokenizer.from_directory(
        llama_tokenizers.write_tokenizer_dir(tmp_path / folder_layout, folder_layout))
    if folder_layout == "model_only":
        complete_lightning_vocabulary(tokenizer)
    return ensure_act_token(tokenizer, "<ACT>")


def _processor(layout: str, tokenizer, **overrides) -> System2Processor:
    values = {"prompt_template": TEMPLATE[layout], "image_token": IMAGE_TOKEN[layout], **overrides}
    config = System2Config.tiny(**values)
    return System2Processor(config, tokenizer, image_processor=None, num_image_tokens=3)


def test_reference_belongs_to_this_vocabulary():
    assert REFERENCE["vocabulary_sha256"] == llama_tokenizers.vocabulary_digest()
    assert "transformers 4.31.0" in REFERENCE["generated_by"]
    assert REFERENCE["question_templates"] == ["Can you {sent}?", "Can you control the robot to {sent}?"]
    assert len(PROMPT_CASES) == 80


@pytest.mark.parametrize("folder_layout", [name for names in READ_FROM.values() for name in names])
def test_vocabulary_and_act_id_as_openhelix(tmp_path, folder_layout):
    layout = next(layout for layout, names in READ_FROM.items() if folder_layout in names)
    tokenizer = _tokenizer(tmp_path, folder_layout)
    assert len(tokenizer) == VOCABULARIES[layout]["vocabulary_size"]
    assert tokenizer.convert_tokens_to_ids("<ACT>") == VOCABULARIES[layout]["act_token_id"]


@pytest.mark.parametrize("folder_layout", [name for names in READ_FROM.values() for name in names])
def test_prompt_ids_equal_openhelix(tmp_path, folder_layout):
    """Every reference case (10 instructions x 2 questions x with/without the image) gives the
    same text and the same ids, through the processor when the prompt has an image."""
    layout = next(layout for layout, names in READ_FROM.items() if folder_layout in names)
    tokenizer = _tokenizer(tmp_path, folder_layout)
    processor = _processor(layout, tokenizer)
    image_id = processor.image_token_id
    checked = Counter()
    for case in (case for case in PROMPT_CASES if case["layout"] == layout):
        expected = [image_id if token == MARKER else token for token in case["input_ids"]]
        instruction = case["instruction"]
        if case["image"]:
            prompt = processor.config.render_prompt(instruction, case["question_index"])
            assert prompt.replace(IMAGE_TOKEN[layout], "<image>") == case["prompt"]
            expanded = processor.encode_prompt(instruction, case["question_index"])
            at = expanded.index(image_id)
            assert expanded[at:at + 3] == [image_id] * 3
            ids = expanded[:at] + expanded[at + 2:]
        else:
            ids = tokenize_with_image(tokenizer, case["prompt"], IMAGE_TOKEN[layout], image_id)
        assert ids == expected, f"{folder_layout}: {case['prompt']!r}"
        checked[case["image"], case["question_index"]] += 1
    assert checked == {(True, 0): 10, (True, 1): 10, (False, 0): 10, (False, 1): 10}


def test_openhelix_spacing_rules(tmp_path):
    """What the reference pins down, spelled out: BOS first; no `▁` piece before <im_start>
    or <ACT>; `▁Can` (not a newline byte) after <im_end> (legacy); LLaVA-1.5 (non-legacy)
    keeps the `▁` + newline byte after <image>, as LLaVA's own prompts have it."""
    lightning = _tokenizer(tmp_path, "lightning")
    ids = _processor("lightning", lightning).encode_prompt("open the drawer", 0)
    tokens = lightning.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>" and tokens[-1] == "<ACT>"
    start, end = tokens.index("<im_start>"), tokens.index("<im_end>")
    assert tokens[start - 1] == ":" and tokens[end + 1] == "▁Can" and tokens[-2] == ":"
    llava15 = _tokenizer(tmp_path, "llava15")
    tokens = llava15.convert_ids_to_tokens(_processor("llava15", llava15).encode_prompt("open the drawer", 0))
    image = tokens.index("<image>")
    assert tokens[image + 3:image + 6] == ["▁", "<0x0A>", "Can"]


def test_save_pretrained_round_trip(tmp_path):
    tokenizer = _tokenizer(tmp_path, "lightning")
    tokenizer.save_pretrained(tmp_path / "saved")
    again = LlamaSentencePieceTokenizer.from_directory(tmp_path / "saved")
    text = "A chat USER: <im_start><im_patch><im_end>\nCan you open the drawer é? ASSISTANT: <ACT>"
    assert again.encode(text) == tokenizer.encode(text) and len(again) == len(tokenizer)
    assert again.decode(again.encode(text, add_special_tokens=False)).startswith("A chat USER:<im_start>")


def test_tokenizer_folder_errors_name_the_cause(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        LlamaSentencePieceTokenizer.from_directory(tmp_path)
    broken = llama_tokenizers.write_tokenizer_dir(tmp_path / "gap", "lightning")
    size = llama_tokenizers.sentencepiece_size()
    (broken / "added_tokens.json").write_text(json.dumps({"<im_patch>": size, "<im_end>": size + 2}))
    with pytest.raises(ValueError, match="without gaps"):
        LlamaSentencePieceTokenizer.from_directory(broken)
    (broken / "added_tokens.json").write_text(json.dumps({"<im_patch>": 5}))
    with pytest.raises(ValueError, match="holds as '<0x02>'"):
        LlamaSentencePieceTokenizer.from_directory(broken)
    (broken / "added_tokens.json").unlink()
    (broken / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        LlamaSentencePieceTokenizer.from_directory(broken)


def test_instructions_with_tokenizer_tokens_are_refused(tmp_path):
    processor = _processor("lightning", _tokenizer(tmp_path, "lightning"))
    image = np.zeros((8, 8, 3), np.uint8)
    for instruction in ("open <im_start> the drawer", "open the drawer</s>", "<s>open", "open <im_patch>"):
        with pytest.raises(ValueError, match="reserved token"):
            processor([image], [instruction])


def test_question_choice_at_inference(tmp_path):
    tokenizer = _tokenizer(tmp_path, "lightning")
    drawn = [_processor("lightning", tokenizer, inference_question="random", seed=4).choose_questions(40)
             for _ in range(2)]
    assert drawn[0] == drawn[1] and set(drawn[0]) == {0, 1}  # seeded, and both questions asked
    other_seed = _processor("lightning", tokenizer, inference_question="random", seed=5).choose_questions(40)
    assert other_seed != drawn[0]
    assert _processor("lightning", tokenizer, inference_question=0).choose_questions(3) == [0, 0, 0]
    fixed = _processor("lightning", tokenizer, prompt_template="{system}{image}\n{instruction} {act}",
                       inference_question="random")
    assert fixed.choose_questions(3) == [0, 0, 0]  # a template without {question} asks nothing else
    assert System2Config.openhelix_lightning().inference_question == "random"
    assert System2Config.llava_7b(None).inference_question == "random"


@pytest.mark.parametrize("overrides, message", [
    ({"question_templates": []}, "must not be empty"),
    ({"question_templates": ["Can you?"]}, "instruction"),
    ({"question_templates": "Can you {instruction}?"}, "list of strings"),
    ({"inference_question": 2}, "inference_question"),
    ({"inference_question": "first"}, "inference_question"),
    ({"prompt_template": "{system}{image}{question}{instruction}{act}"}, "exactly once"),
    ({"question_templates": ["Can you {instruction} <ACT>?", "Please {instruction}."]}, "must not spell"),
])
def test_question_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        System2Config.tiny(**overrides)


def test_llava_folder_with_sentencepiece_tokenizer(tmp_path):
    """A LLaVA folder holding tokenizer.model (as llava-hf ships LLaVA-1.5) is read with the
    exact tokenizer; the planner embeds the OpenHelix-exact ids."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    llava_dir = llama_tokenizers.write_tokenizer_dir(tmp_path / "llava", "llava15_hf")
    size = llama_tokenizers.sentencepiece_size()
    architecture = System2Config.tiny().llava_config
    architecture = {**architecture, "image_token_index": size,
                    "text_config": {**architecture["text_config"], "vocab_size": size + 3}}
    torch.manual_seed(0)
    LlavaForConditionalGeneration(LlavaConfig(**architecture)).save_pretrained(llava_dir)
    build_image_processor(System2Config.tiny()).save_pretrained(llava_dir)
    config = replace(System2Config.tiny(), llava_path=str(llava_dir), llava_config=None, inference_question=0)
    planner = System2Planner(config).eval()
    assert isinstance(planner.tokenizer, LlamaSentencePieceTokenizer)
    assert planner.act_token_id == VOCABULARIES["llava15"]["act_token_id"]
    processor = System2Processor(config, planner.tokenizer, build_image_processor(config))
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    batch = processor([image], ["open the drawer"])
    case = next(case for case in PROMPT_CASES if case["layout"] == "llava15" and case["image"]
                and case["question_index"] == 0 and case["instruction"] == "open the drawer")
    ids = batch["input_ids"][0].tolist()
    at = case["input_ids"].index(MARKER)
    assert ids[:at] == case["input_ids"][:at] and ids[at + 16:] == case["input_ids"][at + 1:]
    with torch.no_grad():
        goal = planner(**batch).goal
    assert goal.shape == (1, 512) and torch.isfinite(goal).all()


def test_release_with_lightning_tokenizer_model_only(tmp_path):
    """A release whose only tokenizer file is LLaMA's tokenizer.model: the loader adds
    LLaVA-Lightning's three image tokens, then <ACT> lands on the row OpenHelix trained
    (vocabulary size - 1), and the prompt ids are OpenHelix's."""
    from release_layout import lightning_state, policy_payload, tiny_release_actor, write_shards

    from openhelix_core.checkpoints import ReleaseArchitecture, load_release_system2, release_architecture

    size = llama_tokenizers.sentencepiece_size()
    act_id = VOCABULARIES["lightning"]["act_token_id"]
    tiny = release_architecture("tiny")
    system2 = replace(tiny.system2, prompt_template=TEMPLATE["lightning"], image_token="<im_patch>",
                      inference_question=0,
                      llava_config={**tiny.system2.llava_config, "image_token_index": size,
                                    "text_config": {**tiny.system2.llava_config["text_config"],
                                                    "vocab_size": act_id + 1}})
    architecture = ReleaseArchitecture("tiny-sentencepiece", system2, tiny.system1, act_id + 1, act_id)
    tokenizer_dir = llama_tokenizers.write_tokenizer_dir(tmp_path / "tokenizer", "model_only")
    reference = System2Planner(system2, tokenizer=complete_lightning_vocabulary(
        LlamaSentencePieceTokenizer.from_directory(tokenizer_dir))).eval()
    assert reference.act_token_id == act_id
    with torch.no_grad():  # as OpenHelix's weights: one projector Linear, <ACT> learnt in its row
        projector = reference.llava.model.multi_modal_projector
        projector.linear_2.weight.copy_(torch.eye(projector.linear_2.weight.shape[0]))
        projector.linear_2.bias.zero_()
        reference.act_embedding.normal_(generator=torch.Generator().manual_seed(2))
        reference.llava.get_input_embeddings().weight[act_id] = reference.act_embedding
    folder = tmp_path / "release" / "prompt_tuning_aux"
    write_shards(folder / "llava_ckpt_safetensors", lightning_state(reference))
    torch.save(policy_payload(tiny_release_actor()), folder / "policy.pth")
    (folder / "tokenizer.model").write_bytes((tokenizer_dir / "tokenizer.model").read_bytes())

    loaded = load_release_system2(tmp_path / "release", "prompt_tuning_aux", architecture=architecture)
    planner, processor = loaded.model, loaded.processor
    assert isinstance(planner.tokenizer, LlamaSentencePieceTokenizer) and planner.act_token_id == act_id
    case = next(case for case in PROMPT_CASES if case["layout"] == "lightning" and case["image"]
                and case["question_index"] == 0 and case["instruction"] == "open the drawer")
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    batch = processor([image], ["open the drawer"])
    ids = batch["input_ids"][0].tolist()
    at = case["input_ids"].index(MARKER)
    assert ids[:at] == case["input_ids"][:at] and ids[at + 16:] == case["input_ids"][at + 1:]
    reference_processor = System2Processor(system2, reference.tokenizer, build_image_processor(system2))
    with torch.no_grad():
        expected = reference(**reference_processor([image], ["open the drawer"])).goal
        torch.testing.assert_close(planner(**batch).goal, expected, rtol=0, atol=1e-5)
