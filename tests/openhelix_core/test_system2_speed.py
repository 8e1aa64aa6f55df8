"""System 2 fast paths on the tiny configuration: the prompt-prefix key/value cache against
the full forward it replaces, and int8 dynamic quantization on CPU."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from openhelix_core.models.system2 import System2Config, System2Planner, System2Processor, build_tiny_system2
from openhelix_core.models.system2.modeling_system2 import _split_at_image

INSTRUCTIONS = ["open the drawer", "push the sliding door to the right side and then lift the red block", "go"]
#: fp32 tolerance between the cached and the full forward: both run the same operations, on
#: differently shaped matrices, so they differ by summation order only.
CACHE_ATOL = 1e-5


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture()
def tiny():
    """A fresh planner per test: the tests below change its cache, weights or quantization."""
    return build_tiny_system2(seed=0)


def _both(planner: System2Planner, batch: dict[str, torch.Tensor]):
    with torch.inference_mode():
        return planner(**batch, use_prefix_cache=False), planner(**batch, use_prefix_cache=True)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("count", [1, 3])
def test_prefix_cache_gives_the_full_forward_goal(tiny, padding_side, count):
    planner, processor = tiny
    batch = processor(_images(count), INSTRUCTIONS[:count], padding_side=padding_side)
    reference, cached = _both(planner, batch)
    assert planner._prefix_cache is not None  # the cached path ran
    torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)
    torch.testing.assert_close(cached.act_hidden_state, reference.act_hidden_state, atol=CACHE_ATOL, rtol=0)
    torch.testing.assert_close(cached.aux_position, reference.aux_position, atol=CACHE_ATOL, rtol=0)
    # The prefix is the prompt before the image: the system sentence and "USER: ".
    prefix_ids = planner._prefix_cache[0][0]
    assert processor.tokenizer.decode(prefix_ids, skip_special_tokens=True) == planner.config.system_prompt + " USER: "


def test_config_default_and_switch(tiny):
    planner, processor = tiny
    assert planner.config.prefix_cache is True
    batch = processor(_images(1), INSTRUCTIONS[:1])
    planner.config = replace(planner.config, prefix_cache=False)
    with torch.inference_mode():
        planner(**batch)
    assert planner._prefix_cache is None
    planner.config = replace(planner.config, prefix_cache=True)
    with torch.inference_mode():
        planner(**batch)
    assert planner._prefix_cache is not None


def test_cached_prefix_is_reused_and_never_written(tiny):
    planner, processor = tiny
    with torch.inference_mode():
        planner(**processor(_images(1), INSTRUCTIONS[:1]))
    key, layers = planner._prefix_cache
    snapshot = [(keys.clone(), values.clone()) for keys, values in layers]
    assert layers[0][0].shape[0] == 1 and layers[0][0].shape[2] == len(key[0])
    for count in (3, 2, 1):
        batch = processor(_images(count), INSTRUCTIONS[:count])
        reference, cached = _both(planner, batch)
        torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)
        assert planner._prefix_cache[1] is layers  # served from the cache, not recomputed
    for (keys, values), (keys_before, values_before) in zip(layers, snapshot):
        assert torch.equal(keys, keys_before) and torch.equal(values, values_before)


def test_changed_system_prompt_is_not_served_from_the_old_cache(tiny):
    planner, processor = tiny
    images = _images(2)
    with torch.inference_mode():
        first = planner(**processor(images, INSTRUCTIONS[:2])).goal
    old_key = planner._prefix_cache[0]
    other = System2Processor(replace(planner.config, system_prompt="You control a robot arm."), planner.tokenizer,
                             processor.image_processor, num_image_tokens=planner.num_image_tokens)
    batch = other(images, INSTRUCTIONS[:2])
    reference, cached = _both(planner, batch)
    assert planner._prefix_cache[0][0] != old_key[0]
    torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)
    assert (cached.goal - first).abs().max() > 1e-3  # the prompt change reaches the goal


def test_changed_weights_invalidate_the_cache(tiny):
    planner, processor = tiny
    batch = processor(_images(2), INSTRUCTIONS[:2])
    before, _ = _both(planner, batch)
    with torch.no_grad():  # an in-place edit of one frozen weight, as a loader would make
        planner.llava.model.language_model.layers[0].self_attn.v_proj.weight.mul_(3.0)
    reference, cached = _both(planner, batch)
    assert (reference.goal - before.goal).abs().max() > 1e-3
    torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)
    with torch.no_grad():  # a whole new state dict
        planner.llava.load_state_dict(build_tiny_system2(seed=1)[0].llava.state_dict())
    reference, cached = _both(planner, batch)
    torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)


def test_prefix_computed_under_autocast_is_not_reused_without_it(tiny):
    planner, processor = tiny
    batch = processor(_images(2), INSTRUCTIONS[:2])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        planner(**batch)
    under_autocast = planner._prefix_cache[1]
    reference, cached = _both(planner, batch)
    assert planner._prefix_cache[1] is not under_autocast
    torch.testing.assert_close(cached.goal, reference.goal, atol=CACHE_ATOL, rtol=0)


def test_batch_without_a_shared_prefix_takes_the_full_forward(tiny):
    planner, processor = tiny
    batch = processor(_images(2), INSTRUCTIONS[:2])
    batch["input_ids"][1, 3] += 1  # a different letter in the second row's system sentence
    ids, mask = batch["input_ids"], batch["attention_mask"]
    image_mask = (ids == planner.image_token_id) & mask.bool()
    act_positions = ((ids == planner.act_token_id) & mask.bool()).long().argmax(dim=1)
    assert _split_at_image(ids, mask, image_mask, act_positions) is None
    reference, cached = _both(planner, batch)
    assert planner._prefix_cache is None
    assert torch.equal(cached.goal, reference.goal)


def test_training_gradients_match_the_full_forward(tiny):
    planner, processor = tiny
    planner.train()
    batch = processor(_images(2), INSTRUCTIONS[:2])
    gradients = []
    for use_cache in (False, True):
        planner.zero_grad()
        planner(**batch, use_prefix_cache=use_cache).goal.square().sum().backward()
        gradients.append(planner.act_embedding.grad.clone())
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------ int8 on CPU
def _is_int8(module: torch.nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")


def test_int8_goal_is_close_to_fp32(tiny):
    planner, processor = tiny
    batch = processor(_images(2), INSTRUCTIONS[:2])
    with torch.inference_mode():
        reference = planner(**batch, use_prefix_cache=False).goal
        planner.quantize_int8()
        cached = planner(**batch).goal
        full = planner(**batch, use_prefix_cache=False).goal
    assert planner.config.quantization == "int8_dynamic"
    assert _is_int8(planner.llava.model.language_model.layers[0].mlp.down_proj)
    assert isinstance(planner.llava.model.multi_modal_projector.linear_1, torch.nn.Linear)  # vision side stays fp32
    # Activations are quantized per call over the whole input, so cached and full int8 calls
    # differ from each other too; both stay near the float32 goal.
    for goal in (cached, full):
        assert (goal - reference).norm() / reference.norm() < 0.1
        assert F.cosine_similarity(goal, reference).min() > 0.99


def test_int8_from_config_and_refused_off_cpu():
    config = System2Config.tiny(quantization="int8_dynamic")
    planner = System2Planner(config)
    assert _is_int8(planner.llava.model.language_model.layers[0].self_attn.q_proj)
    with pytest.raises(ValueError, match="CPU only"):
        System2Planner(config, device="cuda")
    with pytest.raises(RuntimeError, match="CPU only"):
        build_tiny_system2(seed=0)[0].to("meta").quantize_int8()


def test_config_validation():
    with pytest.raises(ValueError, match="prefix_cache"):
        System2Config.tiny(prefix_cache=1)
    with pytest.raises(ValueError, match="quantization"):
        System2Config.tiny(quantization="int4")
    with pytest.raises(ValueError, match="float32"):
        System2Config.tiny(quantization="int8_dynamic", torch_dtype="bfloat16")
    config = System2Config.tiny(prefix_cache=False, quantization="int8_dynamic")
    assert System2Config.from_dict(config.to_dict()) == config
