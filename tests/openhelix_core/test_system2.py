"""System 2 (LLaVA planner) on the tiny random-weight configuration: real forward passes."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from openhelix_core.models.system2 import (
    OPENHELIX_KEY_MAP,
    System2Config,
    System2Output,
    System2Planner,
    System2Processor,
    build_image_processor,
    build_tiny_system2,
    compute_aux_loss,
    convert_openhelix_state_dict,
    load_system2,
    plan_goal,
    resolve_attn_implementation,
)
from openhelix_core.models.system2.modeling_system2 import CONFIG_NAME, WEIGHTS_NAME

SHORT = "open the drawer"
LONG = "push the sliding door to the right side and then lift the red block"


def _image(seed: int, height: int = 48, width: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_system2(seed=0)


def _targets(batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "position": torch.rand(batch, 3, generator=generator) - 0.5,
        "rotation_6d": torch.rand(batch, 6, generator=generator) - 0.5,
        "gripper": torch.tensor([1.0, 0.0][:batch]),
    }


# ------------------------------------------------------------------------ prompt / processor
def test_prompt_holds_image_instruction_and_act_last(tiny):
    planner, processor = tiny
    prompt = processor.build_prompt("  open the drawer. ", question_index=1)
    assert prompt.count("<image>") == 1
    assert "USER: <image>\nCan you control the robot to open the drawer? ASSISTANT: <ACT>" in prompt
    assert "USER: <image>\nCan you open the drawer? ASSISTANT: <ACT>" in processor.build_prompt("open the drawer")
    assert prompt.startswith("A chat between a curious human")
    assert prompt.endswith("<ACT>")
    assert prompt.index("USER:") < prompt.index("<image>") < prompt.index("open the drawer") < prompt.index("<ACT>")

    batch = processor([_image(0)], [SHORT])
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == processor.tokenizer.bos_token_id
    assert ids[-1] == planner.act_token_id  # the last meaningful token
    assert ids.count(planner.act_token_id) == 1
    # transformers 5.x expansion: one placeholder per patch feature (32/8)^2 = 16, contiguous.
    image_positions = [i for i, t in enumerate(ids) if t == planner.image_token_id]
    assert len(image_positions) == planner.num_image_tokens == 16
    assert image_positions == list(range(image_positions[0], image_positions[0] + 16))
    text = processor.tokenizer.decode(ids)
    assert SHORT in text and text.rstrip().endswith("<ACT>")


def test_processor_outputs_and_padding(tiny):
    planner, processor = tiny
    images = [_image(0), _image(1, 64, 32)]
    right = processor(images, [SHORT, LONG], padding_side="right")
    left = processor(images, [SHORT, LONG], padding_side="left")
    for batch in (right, left):
        assert batch["pixel_values"].shape == (2, 3, 32, 32)
        assert batch["pixel_values"].dtype == torch.float32
        assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
        assert batch["input_ids"].shape == batch["attention_mask"].shape
    lengths = right["attention_mask"].sum(1)
    assert lengths[0] < lengths[1]  # different-length instructions really pad
    assert torch.equal(lengths, left["attention_mask"].sum(1))
    pad = processor.pad_token_id
    # right padding: mask ones then zeros; ACT at the last real position
    assert right["attention_mask"][0, : lengths[0]].all() and not right["attention_mask"][0, lengths[0]:].any()
    assert (right["input_ids"][0, lengths[0]:] == pad).all()
    assert right["input_ids"][0, lengths[0] - 1] == planner.act_token_id
    # left padding: ACT is the final column of every row
    assert (left["input_ids"][:, -1] == planner.act_token_id).all()
    assert not left["attention_mask"][0, : left["input_ids"].shape[1] - lengths[0]].any()


def test_act_position_and_outputs_match_across_padding(tiny):
    planner, processor = tiny
    images = [_image(0), _image(1)]
    with torch.no_grad():
        right = planner(**processor(images, [SHORT, LONG], padding_side="right"))
        left = planner(**processor(images, [SHORT, LONG], padding_side="left"))
        singles = [planner(**processor([images[i]], [text])) for i, text in enumerate([SHORT, LONG])]
    for i in range(2):
        torch.testing.assert_close(right.act_hidden_state[i], singles[i].act_hidden_state[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(left.act_hidden_state[i], singles[i].act_hidden_state[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(left.goal[i], right.goal[i], atol=1e-5, rtol=1e-5)
    # the two prompts really give different read-outs, so the matches above are not trivial
    assert not torch.allclose(singles[0].act_hidden_state, singles[1].act_hidden_state, atol=1e-4)


def test_forward_rejects_bad_act_or_image_tokens(tiny):
    planner, processor = tiny
    batch = processor([_image(0)], [SHORT])
    ids = batch["input_ids"].clone()
    ids[0, -1] = processor.tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(ValueError, match="exactly one"):
        planner(batch["pixel_values"], ids, batch["attention_mask"])
    ids = batch["input_ids"].clone()
    first_image = (ids[0] == planner.image_token_id).nonzero()[0, 0]
    ids[0, first_image] = processor.tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(ValueError, match="image tokens"):
        planner(batch["pixel_values"], ids, batch["attention_mask"])


def test_output_shapes(tiny):
    planner, processor = tiny
    with torch.no_grad():
        out = planner(**processor([_image(0), _image(1)], [SHORT, LONG]))
    assert isinstance(out, System2Output)
    assert out.goal.shape == (2, 512)
    assert out.act_hidden_state.shape == (2, 32)
    assert out.aux_position.shape == (2, 3)
    assert out.aux_rotation_6d.shape == (2, 6)
    assert out.aux_gripper_logit.shape == (2, 1)
    for tensor in (out.goal, out.act_hidden_state, out.aux_position, out.aux_rotation_6d, out.aux_gripper_logit):
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()


def test_goal_depends_on_image_and_instruction(tiny):
    planner, processor = tiny
    with torch.no_grad():
        base = planner(**processor([_image(0)], [SHORT])).goal
        other_image = planner(**processor([_image(7)], [SHORT])).goal
        other_text = planner(**processor([_image(0)], ["close the drawer"])).goal
        again = planner(**processor([_image(0)], [SHORT])).goal
    assert torch.equal(base, again)
    assert (base - other_image).abs().max() > 1e-4
    assert (base - other_text).abs().max() > 1e-4


def test_plan_goal(tiny):
    planner, processor = tiny
    goal = plan_goal(planner, processor, _image(0), SHORT)
    assert isinstance(goal, np.ndarray) and goal.shape == (512,) and goal.dtype == np.float32
    assert np.isfinite(goal).all()
    np.testing.assert_array_equal(goal, plan_goal(planner, processor, _image(0), SHORT))


# ------------------------------------------------------------------------ training
def test_only_act_row_projection_and_aux_head_get_gradients():
    planner, processor = build_tiny_system2(seed=0)
    planner.train()
    assert not planner.llava.training  # the frozen LLaVA stays in eval mode
    trainable = planner.trainable_parameters()
    trainable_ids = {id(p) for p in trainable}
    assert {id(p) for p in planner.parameters() if p.requires_grad} == trainable_ids
    assert all(not p.requires_grad for p in planner.llava.parameters())
    embedding_table = planner.llava.get_input_embeddings().weight
    table_before = embedding_table.detach().clone()
    llava_before = {k: v.detach().clone() for k, v in planner.llava.state_dict().items()}
    act_before = planner.act_embedding.detach().clone()

    batch = processor([_image(0), _image(1)], [SHORT, LONG])
    out = planner(**batch)
    loss = compute_aux_loss(out, _targets(2))["loss"] + out.goal.square().mean()
    loss.backward()

    for name, parameter in planner.named_trainable_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert planner.act_embedding.grad.shape == (32,)  # exactly one embedding row learns
    for name, parameter in planner.llava.named_parameters():
        assert parameter.grad is None, name

    torch.optim.SGD(trainable, lr=0.5).step()
    assert (planner.act_embedding.detach() - act_before).abs().max() > 0
    assert torch.equal(embedding_table.detach(), table_before)  # no row of the table moved
    for key, value in planner.llava.state_dict().items():
        assert torch.equal(value, llava_before[key]), key


def test_aux_loss_finite_and_decreasing():
    planner, processor = build_tiny_system2(seed=1)
    planner.train()
    batch = processor([_image(0), _image(1)], [SHORT, LONG])
    targets = _targets(2)
    optimizer = torch.optim.Adam(planner.trainable_parameters(), lr=3e-3)
    history = []
    for _ in range(12):
        optimizer.zero_grad()
        losses = compute_aux_loss(planner(**batch), targets)
        assert set(losses) == {"loss", "position", "rotation", "gripper"}
        assert all(torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.7 * history[0], history
    with pytest.raises(ValueError, match="rotation_6d"):
        compute_aux_loss(planner(**batch), {"position": targets["position"], "gripper": targets["gripper"]})


# ------------------------------------------------------------------------ persistence
def test_save_load_round_trip_is_exact(tmp_path):
    planner, processor = build_tiny_system2(seed=2)
    batch = processor([_image(0), _image(1)], [SHORT, LONG])
    optimizer = torch.optim.Adam(planner.trainable_parameters(), lr=1e-2)
    compute_aux_loss(planner(**batch), _targets(2))["loss"].backward()
    optimizer.step()  # weights differ from a fresh init
    planner.eval()
    with torch.no_grad():
        expected = planner(**batch)

    planner.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "ckpt" / WEIGHTS_NAME))
    assert set(saved) == {name for name, _ in planner.named_trainable_parameters()}  # no LLaVA weight

    loaded = System2Planner.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == planner.config
    with torch.no_grad():
        got = loaded(**batch)
    for field in ("goal", "act_hidden_state", "aux_position", "aux_rotation_6d", "aux_gripper_logit"):
        assert torch.equal(getattr(got, field), getattr(expected, field)), field

    planner2, processor2 = load_system2(tmp_path / "ckpt", device="cpu")
    np.testing.assert_array_equal(
        plan_goal(planner2, processor2, _image(0), SHORT), plan_goal(planner, processor, _image(0), SHORT)
    )


def test_from_pretrained_errors_are_clear(tmp_path):
    planner, _ = build_tiny_system2(seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        System2Planner.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        System2Planner.from_pretrained(tmp_path / "empty")

    ckpt = planner.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="goal_dim mismatch"):
        System2Planner.from_pretrained(ckpt, goal_dim=256)
    with pytest.raises(FileNotFoundError, match="llava_path"):
        System2Planner.from_pretrained(ckpt, llava_path=tmp_path / "no_llava")

    payload = json.loads((ckpt / CONFIG_NAME).read_text())
    payload["config"]["goal_dim"] = 128
    bad_goal = tmp_path / "bad_goal"
    bad_goal.mkdir()
    (bad_goal / CONFIG_NAME).write_text(json.dumps(payload))
    (bad_goal / WEIGHTS_NAME).write_bytes((ckpt / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match="goal_dim mismatch"):
        System2Planner.from_pretrained(bad_goal)

    payload = json.loads((ckpt / CONFIG_NAME).read_text())
    payload["config"]["llava_config"]["text_config"]["hidden_size"] = 64
    bad_hidden = tmp_path / "bad_hidden"
    bad_hidden.mkdir()
    (bad_hidden / CONFIG_NAME).write_text(json.dumps(payload))
    (bad_hidden / WEIGHTS_NAME).write_bytes((ckpt / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match="hidden size mismatch.*32.*64"):
        System2Planner.from_pretrained(bad_hidden)

    (ckpt / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        System2Planner.from_pretrained(ckpt)

    with pytest.raises(ValueError, match="hidden size mismatch"):
        planner.load_trainable_state_dict(
            {**planner.trainable_state_dict(), "act_embedding": torch.zeros(64)}
        )


def test_openhelix_checkpoint_import(tmp_path):
    """A checkpoint laid out like OpenHelix's ``pytorch_model.bin`` (PEFT-prefixed keys)."""
    hidden, width, row = 32, 16, 7
    generator = torch.Generator().manual_seed(11)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    prefix = "base_model.model."
    state = {
        prefix + "model.embed_tokens.weight": rand(row + 3, hidden),
        prefix + "model.layers.0.self_attn.q_proj.lora_A.default.weight": rand(8, hidden),
        prefix + "model.mm_projector.0.weight": rand(hidden, hidden),
        prefix + "lm_head.weight": rand(row + 3, hidden),
        prefix + "model.text_hidden_fcs.0.0.weight": rand(512, hidden),
        prefix + "model.text_hidden_fcs.0.0.bias": rand(512),
        prefix + "model.pred_act_mlps.weight": rand(width, hidden),
        prefix + "model.pred_act_mlps.bias": rand(width),
        prefix + "model.pred_pos_act.weight": rand(3, width),
        prefix + "model.pred_pos_act.bias": rand(3),
        prefix + "model.pred_rot_act.weight": rand(6, width),
        prefix + "model.pred_rot_act.bias": rand(6),
        prefix + "model.pred_gripper_act.weight": rand(1, width),
        prefix + "model.pred_gripper_act.bias": rand(1),
    }
    torch.save(state, tmp_path / "pytorch_model.bin")
    planner = System2Planner.from_openhelix_checkpoint(tmp_path, System2Config.tiny(), act_token_row=row)
    assert planner.config.aux_activation == "identity" and planner.config.aux_hidden_dim == width
    assert torch.equal(planner.act_embedding.detach(), state[prefix + "model.embed_tokens.weight"][row])
    for theirs, ours in OPENHELIX_KEY_MAP.items():
        assert torch.equal(dict(planner.named_trainable_parameters())[ours].detach(), state[prefix + theirs]), ours

    _, processor = build_tiny_system2(seed=0)
    with torch.no_grad():
        out = planner(**processor([_image(0)], [SHORT]))
    h = out.act_hidden_state
    s = {k[len(prefix):]: v for k, v in state.items()}
    latent = h @ s["model.pred_act_mlps.weight"].T + s["model.pred_act_mlps.bias"]  # OpenHelix: no nonlinearity
    torch.testing.assert_close(out.aux_position, latent @ s["model.pred_pos_act.weight"].T + s["model.pred_pos_act.bias"])
    torch.testing.assert_close(out.goal, h @ s["model.text_hidden_fcs.0.0.weight"].T + s["model.text_hidden_fcs.0.0.bias"])

    with pytest.raises(ValueError, match="missing"):
        convert_openhelix_state_dict({"model.embed_tokens.weight": rand(4, hidden)})
    with pytest.raises(ValueError, match="act_token_row"):
        convert_openhelix_state_dict(state, act_token_row=1000)
    with pytest.raises(FileNotFoundError):
        System2Planner.from_openhelix_checkpoint(tmp_path / "absent.bin", System2Config.tiny())


# ------------------------------------------------------------------------ configuration
def test_config_presets_and_round_trip():
    tiny_config = System2Config.tiny()
    assert System2Config.from_dict(tiny_config.to_dict()) == tiny_config
    assert tiny_config.image_size == 32 and tiny_config.llava_config["text_config"]["hidden_size"] == 32
    big = System2Config.llava_7b("/models/llava-1.5-7b-hf")
    assert big.llava_path == "/models/llava-1.5-7b-hf"
    assert big.goal_dim == 512 and big.image_size == 336 and big.torch_dtype == "bfloat16"
    assert big.llava_config["text_config"]["hidden_size"] == 4096
    assert big.llava_config["vision_config"]["patch_size"] == 14
    assert big.llava_config["image_seq_length"] == (336 // 14) ** 2
    assert System2Config.from_dict(json.loads(big.to_json())) == big
    with pytest.raises(ValueError, match="unknown System2Config field"):
        System2Config.from_dict({**tiny_config.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"goal_dim": 0}, "goal_dim"),
        ({"goal_dim": 1.5}, "goal_dim"),
        ({"act_token": ""}, "act_token"),
        ({"image_token": " <image>"}, "image_token"),
        ({"act_token": "<image>"}, "act_token"),
        ({"prompt_template": "{system} {image} {instruction}"}, "prompt_template"),
        ({"prompt_template": "{system} {image} {act} {instruction}"}, "prompt_template"),
        ({"prompt_template": "{system} {image} {image} {instruction} {act}"}, "prompt_template"),
        ({"aux_hidden_dim": -1}, "aux_hidden_dim"),
        ({"aux_activation": "tanh"}, "aux_activation"),
        ({"attn_implementation": "flash"}, "attn_implementation"),
        ({"torch_dtype": "float64"}, "torch_dtype"),
        ({"image_size": 64}, "image_size"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"act_init": "zeros"}, "act_init"),
        ({"llava_config": None}, "llava_path or llava_config"),
        ({"llava_config": {"text_config": {}}}, "vision_config"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        System2Config.tiny(**overrides)


def test_attn_implementation_resolution():
    assert resolve_attn_implementation("auto", "cpu", torch.bfloat16) == "sdpa"
    assert resolve_attn_implementation("auto", "cpu", torch.float32) == "sdpa"
    assert resolve_attn_implementation("eager", "cpu", torch.float32) == "eager"
    planner, _ = build_tiny_system2()
    assert planner.llava.config._attn_implementation == "sdpa"


# ------------------------------------------------------------------------ validation / variants
@pytest.mark.parametrize(
    "images, instructions, message",
    [
        ([_image(0).astype(np.float32)], [SHORT], "uint8"),
        ([_image(0)[..., 0]], [SHORT], "shape"),
        ([np.zeros((8, 8, 4), np.uint8)], [SHORT], "shape"),
        ([np.zeros((0, 8, 3), np.uint8)], [SHORT], "empty"),
        ([_image(0)], ["   "], "empty"),
        ([_image(0)], [""], "empty"),
        ([_image(0)], [3], "str"),
        ([_image(0)], ["open <ACT> now"], "reserved"),
        ([_image(0), _image(1)], [SHORT], "2 images but 1"),
        ([], [], "empty"),
        (_image(0), [SHORT], "list"),
    ],
)
def test_processor_validation(tiny, images, instructions, message):
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor(images, instructions)


def test_custom_act_token_is_added_and_trained():
    config = System2Config.tiny(act_token="<GOAL>")
    planner = System2Planner(config)
    assert planner.act_token_id == 262  # appended after the tiny vocabulary (spliced, never embedded)
    processor = System2Processor(config, planner.tokenizer, build_image_processor(config))
    batch = processor([_image(0)], [SHORT])
    assert batch["input_ids"][0, -1] == planner.act_token_id
    out = planner(**batch)
    out.goal.sum().backward()
    assert planner.act_embedding.grad.abs().sum() > 0


def test_load_system2_presets():
    planner, processor = load_system2(None, preset="tiny")
    assert not planner.training and processor.num_image_tokens == 16
    same, _ = load_system2(None, preset="tiny", seed=0)
    other, _ = load_system2(None, preset="tiny", seed=5)
    goal = plan_goal(planner, processor, _image(0), SHORT)
    np.testing.assert_array_equal(goal, plan_goal(same, processor, _image(0), SHORT))
    assert np.abs(goal - plan_goal(other, processor, _image(0), SHORT)).max() > 1e-4
    with pytest.raises(ValueError, match="llava_path"):
        load_system2(None, preset="llava_7b")
    with pytest.raises(ValueError, match="preset"):
        load_system2(None, preset="huge")
    with pytest.raises(FileNotFoundError, match="llava_path"):
        System2Planner(replace(System2Config.llava_7b("/nonexistent/llava")))


def test_local_llava_directory_is_loaded_offline(tmp_path):
    """The llava_path route (AutoImageProcessor/from_pretrained, local files only; AutoTokenizer
    as the folder has no tokenizer.model) on a LLaVA directory written by transformers; <ACT>
    is added when missing."""
    reference, reference_processor = build_tiny_system2(seed=0)
    llava_dir = tmp_path / "llava"
    reference.llava.save_pretrained(llava_dir)
    reference_processor.tokenizer.save_pretrained(llava_dir)
    reference_processor.image_processor.save_pretrained(llava_dir)

    config = System2Config(llava_path=str(llava_dir), image_size=32, act_token="<GOAL>", attn_implementation="sdpa",
                           inference_question=1)
    planner = System2Planner(config).eval()
    processor = System2Processor(config, planner.tokenizer, build_image_processor(config))
    assert planner.tokenizer.convert_ids_to_tokens(planner.act_token_id) == "<GOAL>"
    with torch.no_grad():
        ours = planner(**processor([_image(0)], [SHORT]))
        # same frozen LLaVA, same prompt except the <ACT>/<GOAL> vector: images and text agree
        assert processor([_image(0)], [SHORT])["pixel_values"].equal(reference_processor([_image(0)], [SHORT])["pixel_values"])
    assert ours.goal.shape == (1, 512) and torch.isfinite(ours.goal).all()
    # the llava_7b preset checks the directory against LLaVA-1.5-7B's geometry
    with pytest.raises(ValueError, match="336"):
        load_system2(None, preset="llava_7b", llava_path=llava_dir)

    planner.save_pretrained(tmp_path / "ckpt")
    moved = tmp_path / "llava_moved"
    llava_dir.rename(moved)
    with pytest.raises(FileNotFoundError, match="llava_path"):
        System2Planner.from_pretrained(tmp_path / "ckpt")
    restored = System2Planner.from_pretrained(tmp_path / "ckpt", llava_path=moved).eval()
    assert restored.config.llava_path == str(moved)
    with torch.no_grad():
        again = restored(**processor([_image(0)], [SHORT]))
    assert torch.equal(again.goal, ours.goal)
