"""A real byte-level tokenizer built in code, for the tiny System 2 and its tests.

It is a ``tokenizers`` BPE model with no merges over the 256 byte-level symbols, so any
text encodes (one token per UTF-8 byte) and nothing has to be downloaded. The special
tokens come first, with fixed ids the tiny LLaVA configuration relies on:

====  ===========  =====================================
id    token        role
====  ===========  =====================================
0     ``<pad>``    padding (the tiny Llama's pad id)
1     ``<s>``      BOS, prepended by the post-processor
2     ``</s>``     EOS
3     ``<unk>``    unknown (never produced by byte-level)
4     ``<image>``  image placeholder (``image_token_index``)
5     ``<ACT>``    learnable action token
====  ===========  =====================================
"""
from __future__ import annotations

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<ACT>")
#: Six special tokens plus the 256 byte-level symbols.
TINY_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


def build_tiny_tokenizer(padding_side: str = "right"):
    """Return a ``PreTrainedTokenizerFast`` with the vocabulary described above."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    if len(vocab) != TINY_VOCAB_SIZE:  # the byte-level alphabet is 256 symbols
        raise RuntimeError(f"unexpected byte-level alphabet size: {len(vocab) - len(SPECIAL_TOKENS)}")

    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", "act_token": "<ACT>"},
        padding_side=padding_side,
    )
    return tokenizer
