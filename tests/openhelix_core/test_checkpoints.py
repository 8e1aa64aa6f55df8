"""Checkpoint loading: parameter counts on the meta device, every published layout written
with tiny configs and reloaded exactly, and failures that name their cause."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from release_layout import (
    lightning_state,
    policy_payload,
    tiny_release_actor,
    tiny_release_planner,
    write_release,
    write_shards,
)
from safetensors.torch import save_file

from openhelix_core.checkpoint_keys import CheckpointError, KeyMapping
from openhelix_core.checkpoints import (
    check_vocabulary,
    convert_llava_keys,
    detect_llava_layout,
    llava_from_state,
    load_llava_state_dict,
    load_openhelix_release,
    load_release_system1,
    load_release_system2,
    release_architecture,
    release_model_id,
)
from openhelix_core.models.system1 import (
    CALVIN_ACTION_POSITION_BOUNDS_ABC_D,
    CALVIN_REL_TRAJ_BOUNDS_ABC_D,
    CURRENT_GRIPPER,
    GOAL,
    PCD,
    RGB,
    DiffuserActor,
    Normalization,
    System1Config,
    count_parameters,
    load_original_checkpoint,
)
from openhelix_core.models.system1.clip_resnet import attnpool_parameter_count
from openhelix_core.models.system2 import (
    System2Config,
    System2Planner,
    System2Processor,
    build_image_processor,
    build_tiny_tokenizer,
)

ACT_ROW = 5  # <ACT> id of the tiny tokenizer
TINY_VOCAB = 262


pytestmark = pytest.mark.usefixtures("single_torch_thread")
def test_llava_7b_parameter_count_on_meta():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(LlavaConfig(**System2Config.llava_7b(None).llava_config))
    total = sum(p.numel() for p in llava.parameters())
    print(f"LLaVA-1.5-7B parameters: {total:,}")
    assert total == 7_063_427_072
    assert abs(total - 7.06e9) / 7.06e9 < 0.005
    assert all(p.is_meta for p in llava.parameters())

    with torch.device("meta"):
        lightning = LlavaForConditionalGeneration(LlavaConfig(**System2Config.openhelix_lightning().llava_config))
    lightning_total = sum(p.numel() for p in lightning.parameters())
    print(f"OpenHelix LLaVA-Lightning-7B parameters (incl. 4096x4096 identity linear_2): {lightning_total:,}")
    identity = 4096 * 4096 + 4096
    assert lightning_total == 7_062_607_872 and lightning_total - identity == 7_045_826_560


def test_3dda_parameter_count_on_meta():
    with torch.device("meta"):
        actor = DiffuserActor(System1Config.openhelix_calvin())
    total = count_parameters(actor)
    backbone = count_parameters(actor.encoder.backbone)
    attnpool = attnpool_parameter_count(64, 224, 1024)
    print(f"3DDA (OpenHelix CALVIN) parameters without attnpool: {total:,}; attnpool {attnpool:,}")
    assert total == 33_204_650
    assert attnpool == 14_789_632
    assert total + attnpool == 47_994_282
    assert backbone + attnpool == 38_316_896
    assert total - backbone == 9_677_386


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reference():
    """A tiny planner whose projector is one Linear (LLaVA-Lightning) and whose embedding
    row <ACT> holds the learnt <ACT> vector, as in OpenHelix's checkpoint."""
    planner = tiny_release_planner(seed=3)
    processor = System2Processor(planner.config, planner.tokenizer, build_image_processor(planner.config),
                                 num_image_tokens=planner.num_image_tokens)
    return planner, processor


@pytest.fixture(scope="module")
def actor():
    return tiny_release_actor(seed=1)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)


def _s2_outputs(planner, processor):
    with torch.no_grad():
        return planner(**processor([_image(0), _image(1)], ["open the drawer", "lift the red block"]))


def _assert_same_s2(a, b):
    for name in ("goal", "act_hidden_state", "aux_position", "aux_rotation_6d", "aux_gripper_logit"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0, msg=name)


def _s1_batch(config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s, ncam = config.image_size, len(config.cameras)
    current = torch.tensor([0.05, -0.1, 0.55, 0.0, 0.0, 0.0, 1.0, 1.0])
    return {
        RGB: torch.rand(2, ncam, 3, s, s, generator=gen),
        PCD: current[:3].view(1, 1, 3, 1, 1) + 0.2 * torch.randn(2, ncam, 3, s, s, generator=gen),
        GOAL: torch.randn(2, 1, config.goal_dim, generator=gen),
        CURRENT_GRIPPER: current.expand(2, config.nhist, 8).clone(),
    }


def _assert_same_s1(a, b):
    batch = _s1_batch(a.config)
    x = a.predict_trajectory(batch, generator=torch.Generator().manual_seed(4))
    y = b.predict_trajectory(batch, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, y, rtol=0, atol=0)


def _release(tmp_path, reference, actor, variant="prompt_tuning_aux", index=True, aux=True):
    return write_release(tmp_path / "openhelix", reference[0], actor, variant, index=index, aux=aux)


def _load(root, variant="prompt_tuning_aux", expected_vocab=TINY_VOCAB, act_token_id=ACT_ROW, **kwargs):
    """The release read into the tiny architecture, expecting ``expected_vocab`` embedding rows
    and ``<ACT>`` at ``act_token_id``."""
    kwargs.setdefault("tokenizer", build_tiny_tokenizer())
    architecture = replace(release_architecture("tiny"), vocab_size=expected_vocab, act_token_id=act_token_id)
    return load_openhelix_release(root, variant, architecture=architecture, **kwargs)


# ------------------------------------------------------------------------------ published layout
@pytest.mark.parametrize("index", [True, False], ids=["with-index", "shards-only"])
def test_openhelix_release_reproduces_outputs(tmp_path, reference, actor, index):
    root = _release(tmp_path, reference, actor, index=index)
    release = _load(root)
    planner, processor = reference
    _assert_same_s2(_s2_outputs(planner, processor), _s2_outputs(release.system2, release.processor))
    _assert_same_s1(actor, release.system1)
    assert release.policy_metadata == {"iter": 65000, "best_loss": 0.125}

    llava_report = release.reports["llava"]
    assert llava_report.complete
    assert set(llava_report.derived) == {"model.multi_modal_projector.linear_2.weight", "model.multi_modal_projector.linear_2.bias"}
    assert llava_report.matched["model.multi_modal_projector.linear_1.weight"] == "model.mm_projector.weight"
    assert "model.layers.0.self_attn.rotary_emb.inv_freq" in llava_report.ignored
    assert "model.text_hidden_fcs.0.0.weight" in llava_report.ignored
    s1_report = release.reports["system1"]
    assert s1_report.complete and "module.encoder.backbone.attnpool.q_proj.weight" in s1_report.ignored
    assert release.reports["system2_heads"].matched["act_embedding"] == f"model.embed_tokens.weight[{ACT_ROW}]"
    assert "0 missing" in s1_report.summary()


def test_prompt_tuning_variant_without_aux_head(tmp_path, reference, actor):
    root = _release(tmp_path, reference, actor, variant="prompt_tuning", aux=False)
    release = _load(root, "prompt_tuning")
    with torch.no_grad():
        ours = _s2_outputs(release.system2, release.processor)
    torch.testing.assert_close(ours.goal, _s2_outputs(*reference).goal, rtol=0, atol=0)
    assert "aux_head.trunk.weight" in release.reports["system2_heads"].derived
    # the aux variant must carry its auxiliary head
    (root / "prompt_tuning").rename(root / "prompt_tuning_aux")
    with pytest.raises(CheckpointError, match="aux_head"):
        _load(root, "prompt_tuning_aux")


def test_merged_pytorch_model_bin_is_accepted(tmp_path, reference, actor):
    folder = tmp_path / "prompt_tuning_aux"
    folder.mkdir()
    torch.save(lightning_state(reference[0]), folder / "pytorch_model.bin")
    torch.save(policy_payload(actor), folder / "policy.pth")
    release = _load(folder)
    _assert_same_s2(_s2_outputs(*reference), _s2_outputs(release.system2, release.processor))


# ------------------------------------------------------------------------------ transformers layouts
def _new_state(planner):
    return {k: v.detach().clone().contiguous() for k, v in planner.llava.state_dict().items()}


def _old_state(planner):
    out = {}
    for key, tensor in _new_state(planner).items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key[len("model.language_model."):]
        elif key.startswith("lm_head."):
            key = "language_model." + key
        elif key.startswith("model.vision_tower."):
            key = "vision_tower.vision_model." + key[len("model.vision_tower."):]
        elif key.startswith("model.multi_modal_projector."):
            key = key[len("model."):]
        out[key] = tensor
    return out


def _planner_from(directory, reference_planner):
    from transformers import LlavaConfig

    config = reference_planner.config
    converted = convert_llava_keys(load_llava_state_dict(directory))
    llava, report = llava_from_state(LlavaConfig(**config.llava_config), converted, source=str(directory))
    planner = System2Planner(config, llava=llava, tokenizer=build_tiny_tokenizer()).eval()
    planner.load_trainable_state_dict(reference_planner.trainable_state_dict())
    return planner, report, converted.layout


@pytest.mark.parametrize("layout", ["transformers_new", "transformers_old"])
def test_transformers_layouts_reproduce_outputs(tmp_path, reference, layout):
    planner, processor = reference
    directory = tmp_path / layout
    directory.mkdir()
    if layout == "transformers_new":
        save_file(_new_state(planner), str(directory / "model.safetensors"))
    else:
        write_shards(directory, _old_state(planner), shards=2)
    restored, report, detected = _planner_from(directory, planner)
    assert detected == layout and report.complete and not report.derived
    _assert_same_s2(_s2_outputs(planner, processor), _s2_outputs(restored, processor))


def test_layout_detection_and_key_mapping():
    assert detect_llava_layout(["model.language_model.norm.weight"]) == "transformers_new"
    assert detect_llava_layout(["language_model.model.norm.weight"]) == "transformers_old"
    assert detect_llava_layout(["base_model.model.model.layers.0.mlp.up_proj.weight"]) == "lightning"
    with pytest.raises(CheckpointError, match="layout"):
        detect_llava_layout(["encoder.weight"])
    mlp = convert_llava_keys({"model.mm_projector.0.weight": torch.zeros(2, 2), "model.mm_projector.2.bias": torch.zeros(2),
                              "model.vision_tower.vision_tower.vision_model.post_layernorm.bias": torch.zeros(2)}, "lightning")
    assert set(mlp.tensors) == {"model.multi_modal_projector.linear_1.weight", "model.multi_modal_projector.linear_2.bias",
                                "model.vision_tower.post_layernorm.bias"}
    staged = convert_llava_keys({"model.vision_tower.vision_model.pre_layrnorm.weight": torch.zeros(2)}, "transformers_new")
    assert list(staged.tensors) == ["model.vision_tower.pre_layrnorm.weight"]


# ------------------------------------------------------------------------------ plain 3DDA
def test_plain_3dda_checkpoint(tmp_path, actor):
    state = {k: v.clone() for k, v in actor.state_dict().items()}  # bare state dict, no DDP prefix
    state["encoder.backbone.attnpool.c_proj.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / "3dda.pth")
    loaded, report = load_original_checkpoint(tmp_path / "3dda.pth", config=System1Config.tiny(),
                                              normalization=actor.normalization, return_report=True)
    _assert_same_s1(actor, loaded)
    assert report.ignored == {"encoder.backbone.attnpool.c_proj.weight": report.ignored["encoder.backbone.attnpool.c_proj.weight"]}
    assert "attention pool" in report.ignored["encoder.backbone.attnpool.c_proj.weight"]


# ------------------------------------------------------------------------------ failures
class _FakeTokenizer:
    def __init__(self, size, act_id=None):
        self.size, self.act_id = size, act_id

    def __len__(self):
        return self.size

    def convert_tokens_to_ids(self, token):
        return self.act_id


def test_vocabulary_mismatch_names_both_numbers_and_cause():
    check_vocabulary(_FakeTokenizer(32004, 32003), 32004, act_token="<ACT>", act_token_id=32003)
    with pytest.raises(ValueError, match=r"32003 tokens.*32004.*<ACT> was not added"):
        check_vocabulary(_FakeTokenizer(32003), 32004)
    with pytest.raises(ValueError, match=r"32003 rows but 32004"):
        check_vocabulary(_FakeTokenizer(32003), 32003)
    with pytest.raises(ValueError, match=r"32005 tokens.*32004"):
        check_vocabulary(_FakeTokenizer(32005), 32004)
    with pytest.raises(ValueError, match=r"'<ACT>' has id 32002.*32003"):
        check_vocabulary(_FakeTokenizer(32004, 32002), 32004, act_token="<ACT>", act_token_id=32003)


def test_release_vocabulary_mismatch(tmp_path, reference, actor):
    root = _release(tmp_path, reference, actor)
    with pytest.raises(ValueError, match=r"262 rows but 263"):
        _load(root, expected_vocab=TINY_VOCAB + 1)
    with pytest.raises(ValueError, match=r"'<ACT>' has id 5.*id 6"):
        _load(root, act_token_id=6)
    # a table padded by one row: the tokenizer (262 with <ACT>) no longer fits
    shards = root / "prompt_tuning_aux" / "llava_ckpt_safetensors"
    state = load_llava_state_dict(shards)
    state["model.embed_tokens.weight"] = torch.cat([state["model.embed_tokens.weight"], torch.zeros(1, 32)])
    for path in shards.iterdir():
        path.unlink()
    write_shards(shards, state)
    with pytest.raises(ValueError, match=r"262 tokens but the checkpoint embeds 263"):
        _load(root, expected_vocab=None)


def test_shape_mismatch_is_named(tmp_path, reference):
    state = _new_state(reference[0])
    state["model.language_model.norm.weight"] = torch.ones(33)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.language_model\.norm\.weight: checkpoint \(33,\) vs model \(32,\)"):
        _planner_from(tmp_path, reference[0])


def test_missing_shard_named_in_index(tmp_path, reference):
    weight_map = write_shards(tmp_path, _old_state(reference[0]), shards=3)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    assert "model-00002-of-00003.safetensors" in weight_map.values()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00003.safetensors"):
        load_llava_state_dict(tmp_path)


def test_unexpected_keys_are_reported(tmp_path, reference, actor):
    state = _new_state(reference[0])
    state["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.zeros(8, 32)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \[model\.language_model\.layers\.0\.self_attn\.q_proj\.lora_A"):
        _planner_from(tmp_path, reference[0])

    from transformers import LlavaConfig

    converted = convert_llava_keys(load_llava_state_dict(tmp_path))
    _, report = llava_from_state(LlavaConfig(**reference[0].config.llava_config), converted, allow_unexpected=True)
    assert report.unexpected == ["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert not report.complete

    payload = policy_payload(actor, extra={"module.encoder.extra_head.weight": torch.zeros(3)})
    torch.save(payload, tmp_path / "policy.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \[module\.encoder\.extra_head\.weight\]"):
        load_original_checkpoint(tmp_path / "policy.pth", config=System1Config.tiny())
    _, s1_report = load_original_checkpoint(tmp_path / "policy.pth", config=System1Config.tiny(),
                                            ignore_unexpected=True, return_report=True)
    assert s1_report.unexpected == ["module.encoder.extra_head.weight"]


def test_missing_release_files_are_named(tmp_path, reference, actor):
    root = _release(tmp_path, reference, actor)
    folder = root / "prompt_tuning_aux"
    with pytest.raises(FileNotFoundError, match="prompt_tuning"):
        _load(root, "prompt_tuning")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        _load(root, tokenizer=None)
    (folder / "policy.pth").rename(folder / "policy.bak")
    with pytest.raises(FileNotFoundError, match="policy.pth"):
        _load(root)
    (folder / "policy.bak").rename(folder / "policy.pth")
    (folder / "llava_ckpt_safetensors").rename(folder / "elsewhere")
    with pytest.raises(FileNotFoundError, match="llava_ckpt_safetensors"):
        _load(root)
    with pytest.raises(ValueError, match="variant"):
        _load(root, "full_finetune")


def test_key_mapping_report():
    report = KeyMapping.compare({"a": torch.zeros(2), "b": torch.zeros(3), "x": torch.zeros(1)},
                                {"a": (2,), "b": (4,), "c": (1,)}, source="ckpt", origins={"x": "module.x"},
                                ignored={"module.pool": "unused"})
    assert report.matched == {"a": "a"} and report.missing == ["c"] and report.unexpected == ["module.x"]
    assert report.mismatched == {"b": ((3,), (4,))} and report.ignored == {"module.pool": "unused"}
    with pytest.raises(CheckpointError, match=r"ckpt does not match m: missing key\(s\) \[c\] \| unexpected key\(s\) \[module\.x\]"):
        report.raise_if_incomplete("m")
    assert json.loads(json.dumps(report.to_dict()))["mismatched"] == {"b": [[3], [4]]}


# ------------------------------------------------------------------------------ one system per node
def test_each_system_loads_from_the_release_without_the_other_ones_files(tmp_path, reference, actor):
    root = write_release(tmp_path / "openhelix", reference[0], actor, with_tokenizer=True)
    folder = root / "prompt_tuning_aux"
    (folder / "policy.pth").rename(tmp_path / "policy.pth")  # a planner node never reads System 1
    system2 = load_release_system2(root, "prompt_tuning_aux", architecture="tiny")
    _assert_same_s2(_s2_outputs(*reference), _s2_outputs(system2.model, system2.processor))
    assert set(system2.reports) == {"llava", "system2_heads"} and system2.reports["llava"].complete
    assert system2.reports["system2_heads"].matched["act_embedding"] == f"model.embed_tokens.weight[{ACT_ROW}]"

    (tmp_path / "policy.pth").rename(folder / "policy.pth")
    (folder / "llava_ckpt_safetensors").rename(tmp_path / "shards")  # a controller never reads System 2
    system1 = load_release_system1(root, "prompt_tuning_aux", architecture="tiny")
    _assert_same_s1(actor, system1.model)
    assert system1.report.complete and system1.metadata == {"iter": 65000, "best_loss": 0.125}
    assert system1.report.summary().startswith(f"{folder / 'policy.pth'}: ")


def test_release_clips_absolute_positions_to_calvin_bounds(tmp_path, reference, actor):
    root = _release(tmp_path, reference, actor)
    system1 = load_release_system1(root, architecture="tiny")
    normalization = system1.model.normalization
    assert normalization.action_position_bounds == CALVIN_ACTION_POSITION_BOUNDS_ABC_D
    assert normalization.gripper_loc_bounds == CALVIN_REL_TRAJ_BOUNDS_ABC_D
    low, high = (torch.tensor(bound) for bound in CALVIN_ACTION_POSITION_BOUNDS_ABC_D)
    batch = _s1_batch(system1.model.config)
    batch[CURRENT_GRIPPER][..., :3] = torch.tensor([0.8, -0.9, 0.1])  # outside CALVIN's box on every axis
    batch[PCD] = batch[PCD] + torch.tensor([0.75, -0.8, -0.45]).view(1, 1, 3, 1, 1)
    positions = system1.model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))[..., :3]
    assert torch.all(positions >= low) and torch.all(positions <= high)
    assert torch.equal(positions[..., 0].max(), high[0]) and torch.equal(positions[..., 2].min(), low[2])

    unclipped = load_release_system1(root, architecture="tiny", normalization=Normalization())
    free = unclipped.model.predict_trajectory(batch, generator=torch.Generator().manual_seed(0))[..., :3]
    assert free[..., 0].max() > high[0], "without the bounds the prediction leaves CALVIN's box"


def test_release_architecture_is_validated_and_tiny_matches_the_tiny_tokenizer():
    tiny = release_architecture("tiny")
    tokenizer = build_tiny_tokenizer()
    assert (tiny.vocab_size, tiny.act_token_id) == (len(tokenizer), tokenizer.convert_tokens_to_ids("<ACT>"))
    assert tiny.system2.llava_config["projector_hidden_act"] == "linear"
    full = release_architecture("openhelix")
    assert (full.vocab_size, full.act_token_id, full.system2.torch_dtype) == (32004, 32003, "bfloat16")
    assert full.system1 == System1Config.openhelix_calvin()
    with pytest.raises(ValueError, match=r"one of \['openhelix', 'tiny'\], got 'huge'"):
        release_architecture("huge")
    assert release_model_id("/data/openhelix", "prompt_tuning") == "openhelix/prompt_tuning//data/openhelix"


def test_release_files_missing_for_one_system_are_named(tmp_path, reference, actor):
    with pytest.raises(FileNotFoundError, match="release directory .*nowhere.* does not exist"):
        load_release_system2(tmp_path / "nowhere", architecture="tiny")
    with pytest.raises(FileNotFoundError, match="release directory .*nowhere.* does not exist"):
        load_release_system1(tmp_path / "nowhere", architecture="tiny")
    root = write_release(tmp_path / "openhelix", reference[0], actor, with_tokenizer=True)
    folder = root / "prompt_tuning_aux"
    (folder / "policy.pth").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*policy\.pth.* \(System 1 weights\)"):
        load_release_system1(root, architecture="tiny")
    shards = folder / "llava_ckpt_safetensors"
    weight_map = json.loads((shards / "model.safetensors.index.json").read_text())["weight_map"]
    lost = next(name for name in sorted(set(weight_map.values())) if name != weight_map["model.embed_tokens.weight"])
    (shards / lost).unlink()
    with pytest.raises(FileNotFoundError, match=f"names shard.*{lost}.* that are missing"):
        load_release_system2(root, architecture="tiny")
    (shards / "model.safetensors.index.json").unlink()  # without an index the shards are read as they are
    with pytest.raises(CheckpointError, match=r"missing key\(s\)"):
        load_release_system2(root, architecture="tiny")
    for path in shards.iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="holds no LLaVA weights"):
        load_release_system2(root, architecture="tiny")
    shards.rmdir()
    with pytest.raises(FileNotFoundError, match=r"missing .*llava_ckpt_safetensors.* \(System 2 weights"):
        load_release_system2(root, architecture="tiny")
    with pytest.raises(ValueError, match="is the 'prompt_tuning_aux' folder, but variant 'prompt_tuning'"):
        load_release_system2(folder, "prompt_tuning", architecture="tiny")


def test_release_of_another_size_is_a_shape_mismatch(tmp_path, reference, actor):
    root = _release(tmp_path, reference, actor)
    tiny = release_architecture("tiny")
    wider_system1 = replace(tiny, system1=replace(tiny.system1, embedding_dim=48))
    with pytest.raises(CheckpointError, match=r"policy\.pth does not match the System 1 model: shape mismatch .*"
                                              r"checkpoint \(24, 8, 1, 1\) vs model \(48, 8, 1, 1\)"):
        load_release_system1(root, architecture=wider_system1)
    text = {**tiny.system2.llava_config["text_config"], "intermediate_size": 96}
    wider_llava = replace(tiny.system2, llava_config={**tiny.system2.llava_config, "text_config": text})
    with pytest.raises(CheckpointError, match=r"shape mismatch .*mlp\.\w+_proj\.weight: checkpoint \(\d+, \d+\) vs model"):
        load_release_system2(root, architecture=replace(tiny, system2=wider_llava), tokenizer=build_tiny_tokenizer())
