"""Writes models in the layout of the published OpenHelix release (Hugging Face repo
``OpenHelix/openhelix``), independently of the loader in ``openhelix_core.checkpoints``:
the names are spelled here as OpenHelix's training code saves them, so a mapping error in the
loader is not mirrored by the writer.

Used by the checkpoint tests and by the integration test that starts the nodes on a release.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from openhelix_core.checkpoints import release_architecture
from openhelix_core.models.system1 import DiffuserActor, Normalization
from openhelix_core.models.system2 import OPENHELIX_KEY_MAP, System2Planner, build_tiny_tokenizer

_HEADS = {ours: theirs for theirs, ours in OPENHELIX_KEY_MAP.items()}


def tiny_release_planner(seed: int = 3) -> System2Planner:
    """A planner of the ``"tiny"`` release architecture with random trained-looking weights, as
    OpenHelix's checkpoint has them: the projector is one Linear (LLaVA-Lightning), so
    ``linear_2`` is the identity, and the embedding row of ``<ACT>`` holds the learnt vector."""
    architecture = release_architecture("tiny")
    planner = System2Planner(replace(architecture.system2, seed=seed)).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _, parameter in planner.named_trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        projector = planner.llava.model.multi_modal_projector
        projector.linear_2.weight.copy_(torch.eye(projector.linear_2.weight.shape[0]))
        projector.linear_2.bias.zero_()
        planner.llava.get_input_embeddings().weight[architecture.act_token_id] = planner.act_embedding
    return planner


def tiny_release_actor(seed: int = 1) -> DiffuserActor:
    """A System 1 of the ``"tiny"`` release architecture with seeded random weights and the
    release's CALVIN normalization (absolute positions clipped to CALVIN's bounds)."""
    torch.manual_seed(seed)
    return DiffuserActor(release_architecture("tiny").system1, Normalization.openhelix_calvin()).eval()


def lightning_state(planner: System2Planner, aux: bool = True) -> dict[str, torch.Tensor]:
    """The planner as LISAForCausalLM / LLaVA-Lightning names (OpenHelix's planner layout)."""
    out = {}
    for key, tensor in planner.llava.state_dict().items():
        if key.startswith("model.language_model."):
            out["model." + key[len("model.language_model."):]] = tensor
        elif key.startswith("model.vision_tower."):
            out["model.vision_tower.vision_tower.vision_model." + key[len("model.vision_tower."):]] = tensor
        elif key.startswith("model.multi_modal_projector.linear_1."):
            out["model.mm_projector." + key.rsplit(".", 1)[1]] = tensor
        elif key.startswith("model.multi_modal_projector.linear_2."):
            continue  # LLaVA-Lightning has a single Linear
        else:
            out[key] = tensor
    for ours, parameter in planner.named_trainable_parameters():
        if ours in _HEADS and (aux or not ours.startswith("aux_head.")):
            out[_HEADS[ours]] = parameter.detach()
    out["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # older transformers saved it
    out["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def write_shards(folder: Path, state: dict[str, torch.Tensor], shards: int = 3, index: bool = True) -> dict[str, str]:
    """``state`` as ``model-0000i-of-0000n.safetensors`` shards (and their index); returns the weight map."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    if index:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


def policy_payload(actor: DiffuserActor, extra: dict[str, torch.Tensor] | None = None) -> dict:
    """What OpenHelix's ``save_checkpoint`` writes to ``policy.pth``: the DDP state dict
    (``module.`` keys, with CLIP's attention pool 3DDA never runs), an optimizer state,
    ``iter`` and ``best_loss``."""
    weights = {"module." + k: v.clone() for k, v in actor.state_dict().items()}
    width = actor.config.backbone_width * 32
    weights["module.encoder.backbone.attnpool.positional_embedding"] = torch.zeros(2, width)
    weights["module.encoder.backbone.attnpool.q_proj.weight"] = torch.zeros(width, width)
    weights.update(extra or {})
    head = [p.detach().clone().requires_grad_(True) for p in list(actor.prediction_head.parameters())[:2]]
    optimizer = torch.optim.AdamW(head, lr=1e-4)
    for parameter in head:
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"weight": weights, "optimizer": optimizer.state_dict(), "iter": 65000, "best_loss": 0.125}


def write_release(root: Path, planner: System2Planner, actor: DiffuserActor, variant: str = "prompt_tuning_aux",
                  index: bool = True, aux: bool = True, with_tokenizer: bool = False) -> Path:
    """``root/<variant>/{policy.pth, llava_ckpt_safetensors/}`` and, with ``with_tokenizer``,
    the tiny tokenizer's files in the variant folder; returns ``root``."""
    folder = root / variant
    write_shards(folder / "llava_ckpt_safetensors", lightning_state(planner, aux=aux), index=index)
    torch.save(policy_payload(actor), folder / "policy.pth")
    if with_tokenizer:
        build_tiny_tokenizer().save_pretrained(str(folder))
    return root
