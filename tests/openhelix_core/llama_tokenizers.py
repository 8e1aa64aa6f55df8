"""Small LLaMA-style sentencepiece tokenizers, built in code, shaped like the ones OpenHelix uses.

The model is assembled piece by piece as a sentencepiece ``ModelProto`` (no training, so the
bytes are the same on every machine): a BPE model with LLaMA's conventions -- ``<unk>`` = 0,
``<s>`` = 1, ``</s>`` = 2, the 256 byte-fallback pieces ``<0x00>``..``<0xFF>`` next, then
ordinary pieces; identity normalizer, a dummy ``▁`` prefix, whitespace kept as is. The
ordinary pieces cover the words of OpenHelix's prompt and a few CALVIN instructions (every
prefix of each word, with and without ``▁``, so BPE can merge a word step by step), the ASCII
letters, digits and punctuation; anything else (a newline, ``é``) falls back to bytes.

Tokenizer folders (``write_tokenizer_dir``):

* ``lightning``: as LLaVA-7B-Lightening-v1-1 ships it for transformers 4.31 --
  ``tokenizer.model``, ``tokenizer_config.json`` (``LlamaTokenizer``, no ``add_bos_token``
  key), ``special_tokens_map.json`` and ``added_tokens.json`` with ``<im_patch>``,
  ``<im_start>``, ``<im_end>`` right after the sentencepiece vocabulary.
* ``model_only``: ``tokenizer.model`` alone.
* ``llava15``: as LLaVA-1.5 (Vicuna-1.5) for transformers 4.31: ``added_tokens.json`` holds
  ``<image>`` and ``<pad>``, which is the padding token; ``legacy: false``.
* ``llava15_hf``: the same vocabulary written as newer transformers do
  (``added_tokens_decoder`` inside ``tokenizer_config.json``, no ``added_tokens.json``).

This module needs only sentencepiece and protobuf, so the script that produces the reference
ids with transformers 4.31 (``data/openhelix_prompt_ids/make_reference.py``) imports it too.
"""
from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

LAYOUTS = ("lightning", "model_only", "llava15", "llava15_hf")

SYSTEM_SENTENCE = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_CORPUS = SYSTEM_SENTENCE + (
    " USER ASSISTANT Can you control the robot to open close the drawer push pull slide sliding door"
    " left right side lift red blue pink block from table turn on off light bulb green rotate"
    " place in into move sure will"
)
_BYTE_PIECES = [f"<0x{value:02X}>" for value in range(256)]
_LIGHTNING_TOKENS = ("<im_patch>", "<im_start>", "<im_end>")
_LLAVA15_TOKENS = ("<image>", "<pad>")


def _ordinary_pieces() -> list[str]:
    pieces: list[str] = ["▁"]
    for word in _CORPUS.replace(".", " ").replace(",", " ").split():
        for length in range(1, len(word) + 1):
            pieces += [word[:length], "▁" + word[:length]]
    pieces += list(string.ascii_letters + string.digits + "?:.,'!-")
    return list(dict.fromkeys(pieces))  # first occurrence keeps its rank


def build_llama_sentencepiece() -> bytes:
    """The serialized ``ModelProto`` of the tiny LLaMA-style BPE tokenizer."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    ordinary = _ordinary_pieces()
    for text, kind in (("<unk>", model_pb2.ModelProto.SentencePiece.UNKNOWN),
                       ("<s>", model_pb2.ModelProto.SentencePiece.CONTROL),
                       ("</s>", model_pb2.ModelProto.SentencePiece.CONTROL)):
        proto.pieces.add(piece=text, score=0.0, type=kind)
    for text in _BYTE_PIECES:
        proto.pieces.add(piece=text, score=0.0, type=model_pb2.ModelProto.SentencePiece.BYTE)
    for rank, text in enumerate(ordinary):
        # LLaMA's scores fall with the rank; longer pieces are merged later, so rank them later.
        proto.pieces.add(piece=text, score=-float(rank), type=model_pb2.ModelProto.SentencePiece.NORMAL)
    trainer = proto.trainer_spec
    trainer.model_type = model_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(proto.pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def vocabulary_digest() -> str:
    """sha256 of the piece table: the reference ids belong to exactly this vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto.FromString(build_llama_sentencepiece())
    table = [(piece.piece, piece.score, int(piece.type)) for piece in proto.pieces]
    return hashlib.sha256(json.dumps(table).encode()).hexdigest()


def sentencepiece_size() -> int:
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    return len(model_pb2.ModelProto.FromString(build_llama_sentencepiece()).pieces)


def _special(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_tokenizer_dir(directory: str | Path, layout: str) -> Path:
    """Write the tokenizer files of ``layout`` (see the module docstring) into ``directory``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(build_llama_sentencepiece())
    if layout == "model_only":
        return directory
    size = sentencepiece_size()
    added = _LIGHTNING_TOKENS if layout == "lightning" else _LLAVA15_TOKENS
    config = {"bos_token": _special("<s>"), "eos_token": _special("</s>"), "unk_token": _special("<unk>"),
              "clean_up_tokenization_spaces": False, "model_max_length": 2048, "pad_token": None,
              "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}
    special_map = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if layout != "lightning":  # Vicuna-1.5's configuration: explicit BOS, non-legacy spacing
        config.update(pad_token="<pad>", add_bos_token=True, add_eos_token=False, legacy=False)
        special_map["pad_token"] = "<pad>"
    if layout == "llava15_hf":
        decoder = {str(index): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": True}
                   for index, text in enumerate(("<unk>", "<s>", "</s>"))}
        for offset, text in enumerate(added):
            decoder[str(size + offset)] = {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                           "single_word": False, "special": True}
        config.update(added_tokens_decoder=decoder, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    else:
        (directory / "added_tokens.json").write_text(
            json.dumps({text: size + offset for offset, text in enumerate(added)}, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    return directory
