"""The LLaMA tokenizer System 2 was trained with, read from its sentencepiece ``tokenizer.model``.

OpenHelix (and LLaVA before it) tokenised every prompt with transformers 4.31's *slow*
``LlamaTokenizer``. Later transformers releases read the same files into a different
tokenizer (a fast backend, other defaults for the BOS token and for the spaces around added
tokens), and the token ids change: the goal then moves by a few per cent, and System 1 sees
goals it was never trained on. This module reproduces the slow tokenizer's ids exactly,
with sentencepiece alone (tests compare against ids produced by transformers 4.31):

1. the text is cut at added tokens (``<ACT>``, ``<im_start>``, ...) and at the special tokens
   -- at the earliest position, the longest token there;
2. whitespace next to an added token is dropped on both sides (the slow tokenizer's default
   for tokens added as plain strings, which is how LLaVA and OpenHelix add theirs); the
   special tokens ``<s>``, ``</s>``, ``<unk>`` and the padding token keep it;
3. each remaining piece goes through sentencepiece on its own. In the *legacy* mode (the
   default; LLaVA-7B-Lightening's configuration) every piece gets sentencepiece's ``▁``
   prefix. With ``legacy: false`` (Vicuna-1.5 / LLaVA-1.5) one ``▁`` is put in front of the
   whole text, and a piece that follows an added token loses the ``▁`` sentencepiece adds;
4. ``<s>`` is prepended unless ``add_bos_token`` is false; ``</s>`` appended if
   ``add_eos_token``.

Files read from a tokenizer folder: ``tokenizer.model`` (required), ``tokenizer_config.json``
(``add_bos_token``, ``add_eos_token``, ``legacy``, special tokens, ``added_tokens_decoder``),
``special_tokens_map.json`` and ``added_tokens.json``; ``tokenizer.json`` only for its
``added_tokens`` when nothing else lists them. The added tokens must follow the sentencepiece
vocabulary without gaps, as they always do when they were added with ``add_tokens``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

TOKENIZER_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
ADDED_TOKENS = "added_tokens.json"
FAST_TOKENIZER = "tokenizer.json"
SPIECE_UNDERLINE = "▁"

#: Tokens LLaVA-Lightning adds after the LLaMA vocabulary, in this order (ids 32000-32002);
#: OpenHelix then adds ``<ACT>`` (32003).
LIGHTNING_IMAGE_TOKENS = ("<im_patch>", "<im_start>", "<im_end>")


def _token_text(value) -> str | None:
    """A special token as configs store it: a string, an AddedToken dict, or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"cannot read a special token from {value!r}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {str(path)!r}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return data


class LlamaSentencePieceTokenizer:
    """Slow-``LlamaTokenizer``-exact tokenizer over a sentencepiece model (see module docstring).

    Offers the part of the transformers tokenizer interface System 2 uses: calling it,
    ``encode``, ``decode``, ``convert_tokens_to_ids`` / ``convert_ids_to_tokens``, ``len()``,
    ``add_tokens``, ``get_added_vocab``, ``all_special_tokens``, the ``*_token_id`` attributes
    and ``save_pretrained``.

    Args:
        model_proto: the serialized sentencepiece model (``tokenizer.model``'s bytes).
        added_tokens: tokens after the sentencepiece vocabulary, in id order.
        bos_token / eos_token / unk_token / pad_token: special tokens (``pad_token`` may be
            None: padding then uses ``unk_token``, as OpenHelix sets it).
        add_bos_token / add_eos_token: whether ``encode`` adds ``<s>`` / ``</s>``.
        legacy: the slow tokenizer's ``legacy`` flag (spacing after added tokens).
        padding_side: ``"right"`` or ``"left"`` (kept for callers that pad batches).
    """

    def __init__(self, model_proto: bytes, added_tokens: Sequence[str] = (), *, bos_token: str = "<s>",
                 eos_token: str = "</s>", unk_token: str = "<unk>", pad_token: str | None = None,
                 add_bos_token: bool = True, add_eos_token: bool = False, legacy: bool = True,
                 padding_side: str = "right") -> None:
        import sentencepiece

        self._model_proto = bytes(model_proto)
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.LoadFromSerializedProto(self._model_proto)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"not a sentencepiece model: {error}") from error
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = bos_token, eos_token, unk_token, pad_token
        self.add_bos_token, self.add_eos_token, self.legacy = bool(add_bos_token), bool(add_eos_token), bool(legacy)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.padding_side = padding_side
        self._added: dict[str, int] = {}
        self._added_by_id: dict[int, str] = {}
        self.add_tokens(list(added_tokens))
        for name in ("bos_token", "eos_token", "unk_token"):
            if self.convert_tokens_to_ids(getattr(self, name)) is None:
                raise ValueError(f"{name} {getattr(self, name)!r} is not in the vocabulary")
        if pad_token is not None and self.convert_tokens_to_ids(pad_token) is None:
            raise ValueError(f"pad_token {pad_token!r} is not in the vocabulary")

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_directory(cls, directory: str | os.PathLike, padding_side: str = "right") -> "LlamaSentencePieceTokenizer":
        """Read a tokenizer folder (see the module docstring for the files)."""
        directory = Path(directory)
        model_file = directory / TOKENIZER_MODEL
        if not model_file.is_file():
            raise FileNotFoundError(f"{str(model_file)!r} does not exist: System 2 needs the sentencepiece model")
        config = _read_json(directory / TOKENIZER_CONFIG) if (directory / TOKENIZER_CONFIG).is_file() else {}
        special_map = _read_json(directory / SPECIAL_TOKENS_MAP) if (directory / SPECIAL_TOKENS_MAP).is_file() else {}
        specials = {}
        for name, default in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", None)):
            value = special_map.get(name, config.get(name, default))
            specials[name] = _token_text(value)
        pad_token = specials.pop("pad_token")
        tokenizer = cls(model_file.read_bytes(), **specials, add_bos_token=config.get("add_bos_token", True),
                        add_eos_token=config.get("add_eos_token", False), legacy=config.get("legacy", True),
                        padding_side=padding_side)
        tokenizer._add_listed_tokens(directory, config)  # the padding token may be one of them
        if pad_token is not None:
            if tokenizer.convert_tokens_to_ids(pad_token) is None:
                raise ValueError(f"pad_token {pad_token!r} of {str(directory)!r} is not in the vocabulary")
            tokenizer.pad_token = pad_token
        return tokenizer

    def _add_listed_tokens(self, directory: Path, config: Mapping) -> None:
        """Add the tokens a folder lists after the sentencepiece vocabulary, checking their ids."""
        listed: dict[int, str] = {}
        source = None
        if (directory / ADDED_TOKENS).is_file():
            source = directory / ADDED_TOKENS
            listed = {int(index): text for text, index in _read_json(source).items()}
        elif isinstance(config.get("added_tokens_decoder"), Mapping):
            source = directory / TOKENIZER_CONFIG
            listed = {int(index): _token_text(entry) for index, entry in config["added_tokens_decoder"].items()}
        elif (directory / FAST_TOKENIZER).is_file():
            source = directory / FAST_TOKENIZER
            entries = _read_json(source).get("added_tokens", [])
            listed = {int(entry["id"]): entry["content"] for entry in entries}
        base = self.sp_model.get_piece_size()
        for index, text in listed.items():  # entries inside the sentencepiece vocabulary must agree with it
            if index < base and self.sp_model.id_to_piece(index) != text:
                raise ValueError(f"{str(source)!r} maps {text!r} to id {index}, which the sentencepiece model "
                                 f"holds as {self.sp_model.id_to_piece(index)!r}")
        extra = sorted(index for index in listed if index >= base)
        if extra != list(range(base, base + len(extra))):
            raise ValueError(f"{str(source)!r} lists added token ids {extra}, but they must follow the "
                             f"sentencepiece vocabulary ({base} pieces) without gaps")
        self.add_tokens([listed[index] for index in extra])

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str, ...]:
        """Write ``tokenizer.model``, ``added_tokens.json``, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` (readable by this class and by transformers 4.31)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TOKENIZER_MODEL).write_bytes(self._model_proto)
        (directory / ADDED_TOKENS).write_text(json.dumps(self._added, indent=2))
        specials = {"bos_token": self.bos_token, "eos_token": self.eos_token, "unk_token": self.unk_token}
        if self.pad_token is not None:
            specials["pad_token"] = self.pad_token
        config = {**specials, "add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                  "legacy": self.legacy, "padding_side": self.padding_side, "tokenizer_class": "LlamaTokenizer"}
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2))
        (directory / SPECIAL_TOKENS_MAP).write_text(json.dumps(specials, indent=2))
        return tuple(str(directory / name) for name in (TOKENIZER_MODEL, ADDED_TOKENS, TOKENIZER_CONFIG,
                                                         SPECIAL_TOKENS_MAP))

    # ------------------------------------------------------------------ vocabulary
    def __len__(self) -> int:
        return self.sp_model.get_piece_size() + len(self._added)

    def add_tokens(self, tokens: str | Iterable[str], special_tokens: bool = False) -> int:
        """Append tokens not yet in the vocabulary (each one id, cut out of the text before
        sentencepiece sees it); returns how many were new. ``special_tokens`` is accepted for
        interface compatibility: the slow tokenizer treats both kinds alike when encoding."""
        del special_tokens
        if isinstance(tokens, str):
            tokens = [tokens]
        added = 0
        for token in tokens:
            token = str(token)
            if not token:
                raise ValueError("cannot add an empty token")
            if self.convert_tokens_to_ids(token) is not None:
                continue
            index = len(self)
            self._added[token] = index
            self._added_by_id[index] = token
            added += 1
        return added

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(index): index for index in range(self.sp_model.get_piece_size())}
        vocab.update(self._added)
        return vocab

    def get_added_vocab(self) -> dict[str, int]:
        """The tokens added after the sentencepiece vocabulary, with their ids."""
        return dict(self._added)

    def _token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        index = self.sp_model.piece_to_id(token)
        if index == self.sp_model.unk_id() and token != self.sp_model.id_to_piece(index):
            return None
        return int(index)

    def convert_tokens_to_ids(self, tokens):
        """Id of a token (None when it is not in the vocabulary), or a list of ids."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._added_by_id.get(ids) or self.sp_model.id_to_piece(ids)
        return [self.convert_ids_to_tokens(int(index)) for index in ids]

    @property
    def bos_token_id(self) -> int:
        return self._token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self._token_to_id(self.eos_token)

    @property
    def unk_token_id(self) -> int:
        return self._token_to_id(self.unk_token)

    @property
    def pad_token_id(self) -> int:
        return self._token_to_id(self.pad_token if self.pad_token is not None else self.unk_token)

    @property
    def all_special_tokens(self) -> list[str]:
        return [token for token in (self.bos_token, self.eos_token, self.unk_token, self.pad_token) if token]

    # ------------------------------------------------------------------ encoding
    def _split_at_added_tokens(self, text: str) -> list[str]:
        """``text`` cut before and after every added / special token, earliest and longest first."""
        boundaries = sorted(set(self._added) | set(self.all_special_tokens), key=len, reverse=True)
        pieces, start, position = [], 0, 0
        while position < len(text):
            match = next((token for token in boundaries if text.startswith(token, position)), None)
            if match is None:
                position += 1
                continue
            pieces += [text[start:position], match]
            position += len(match)
            start = position
        pieces.append(text[start:])
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text`` without BOS/EOS (see the module docstring for the rules)."""
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        pieces = self._split_at_added_tokens(text)
        keeps_spaces = set(self.all_special_tokens)
        for index in range(1, len(pieces), 2):  # odd positions hold the tokens
            if pieces[index] in keeps_spaces:
                continue
            pieces[index - 1] = pieces[index - 1].rstrip()
            if index + 1 < len(pieces):
                pieces[index + 1] = pieces[index + 1].lstrip()
        tokens: list[str] = []
        for index, piece in enumerate(pieces):
            if not piece:
                continue
            if index % 2 == 1:  # an added or special token, never split
                tokens.append(piece)
            else:
                tokens += self._sentencepiece_tokens(piece)
        return tokens

    def _sentencepiece_tokens(self, piece: str) -> list[str]:
        if self.legacy:
            return self.sp_model.encode(piece, out_type=str)
        starts_text = piece.startswith(SPIECE_UNDERLINE)
        if starts_text:
            piece = piece[1:]
        tokens = self.sp_model.encode(piece, out_type=str)
        if not starts_text and not piece.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` BOS / EOS as configured. A piece
        that is not in the vocabulary (possible only with ``legacy: false``) becomes ``<unk>``,
        as in transformers 4.31."""
        unknown = self.unk_token_id
        ids = [index if index is not None else unknown for index in map(self._token_to_id, self.tokenize(text))]
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos_token else []) + ids
            ids += [self.eos_token_id] if self.add_eos_token else []
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self.encode(text, add_special_tokens=add_special_tokens)
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``: runs of sentencepiece ids decoded together, added tokens verbatim."""
        skipped = {self._token_to_id(token) for token in self.all_special_tokens} if skip_special_tokens else set()
        parts, run = [], []
        for index in map(int, ids):
            if index in skipped:
                continue
            if index in self._added_by_id:
                parts.append(self.sp_model.decode(run))
                parts.append(self._added_by_id[index])
                run = []
            else:
                run.append(index)
        parts.append(self.sp_model.decode(run))
        return "".join(parts)


def has_sentencepiece_model(directory: str | os.PathLike) -> bool:
    return (Path(directory) / TOKENIZER_MODEL).is_file()


def complete_lightning_vocabulary(tokenizer: LlamaSentencePieceTokenizer) -> LlamaSentencePieceTokenizer:
    """Give a bare LLaMA tokenizer (``tokenizer.model`` alone) the tokens LLaVA-Lightning added,
    in LLaVA-Lightning's order, when none of them is there yet; a vocabulary that already
    holds some of them is left as it is (the vocabulary check then judges it)."""
    if all(tokenizer.convert_tokens_to_ids(token) is None for token in LIGHTNING_IMAGE_TOKENS):
        tokenizer.add_tokens(list(LIGHTNING_IMAGE_TOKENS), special_tokens=True)
    return tokenizer
