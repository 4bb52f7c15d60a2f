"""Train a tokenizer with `tokenizers` and wrap it as a `transformers` fast tokenizer.

Three kinds are supported:

* ``"word"``: a word-level vocabulary over whitespace-separated tokens (the sentenceMIM setting for PTB). Splitting
  is on whitespace only, so PTB tokens such as ``<unk>``, ``n't`` and ``'s`` stay single tokens and decoding is a
  space join, which is what reconstruction BLEU with ``tokenize='none'`` expects.
* ``"bpe"``: byte-level BPE (no unknown tokens at all), for raw text.
* ``"unigram"``: a SentencePiece-style unigram model with the Metaspace pre-tokenizer.

Special tokens always come first, so their ids are fixed for every kind: ``<pad>`` = 0, ``<unk>`` = 1, ``<s>`` = 2,
``</s>`` = 3. The post-processor adds ``<s>`` and ``</s>`` around every sentence.

    >>> tok = train_tokenizer(["the cat sat .", "the dog ran ."], kind="word")
    >>> tok("the cat ran .")["input_ids"]  # doctest: +SKIP
    [2, 4, 7, 9, 5, 3]
    >>> tok.save_pretrained("my-model")  # next to the model weights; reload with load_tokenizer("my-model")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .files import first_line, read_json

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN]  # this order fixes the ids 0, 1, 2, 3
TOKENIZER_KINDS = ("word", "bpe", "unigram")


def _build_backend(kind: str, vocab_size: int, min_frequency: int) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained `tokenizers.Tokenizer` of the given kind and the trainer that fills its vocabulary."""
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        # No decoder: decoding joins tokens with single spaces, the PTB convention.
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS
        )
    elif kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        )
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK_TOKEN)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: use one of {', '.join(TOKENIZER_KINDS)}")
    return tokenizer, trainer


def iterate_texts(texts: Iterable[str], chunk_size: int = 10_000) -> Iterator[str]:
    """Iterate over texts; sequences (a list, a `datasets` column) are read in slices, which is much faster for a
    `datasets` column than iterating it row by row."""
    if hasattr(texts, "__len__") and hasattr(texts, "__getitem__") and not isinstance(texts, str):
        for start in range(0, len(texts), chunk_size):
            yield from texts[start : start + chunk_size]
    else:
        yield from texts


def _without_special_tokens(texts: Iterable[str]) -> Iterator[str]:
    """The training texts with special-token strings blanked out.

    PTB already contains the literal word "<unk>". Left in, the trainer would count it as an ordinary word and give
    it a second id, and out-of-vocabulary words would then map to that id instead of 1. At encoding time the
    special tokens are matched before pre-tokenization, so blanking them here changes nothing else.
    """
    for text in iterate_texts(texts):
        if "<" in text:  # cheap test first: almost no line contains a special token
            for token in SPECIAL_TOKENS:
                text = text.replace(token, " ")
        yield text


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "word",
    vocab_size: int = 10000,
    min_frequency: int = 1,
    lowercase: bool = False,
    model_max_length: int = 128,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer of `kind` (see the module docstring) on `texts` (any iterable of str; a `datasets` column
    works) and return it as a `transformers` fast tokenizer.

    vocab_size counts the special tokens; min_frequency applies to "word" and "bpe" only; lowercase applies at
    training and at encoding time; model_max_length counts BOS and EOS.
    """
    tokenizer, trainer = _build_backend(kind, vocab_size, min_frequency)
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.train_from_iterator(_without_special_tokens(texts), trainer=trainer)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    if list(ids.values()) != list(range(len(SPECIAL_TOKENS))):  # a guard: the model relies on pad id 0
        raise RuntimeError(f"special token ids came out as {ids}, expected 0..3")
    # transformers would otherwise glue PTB tokens back together ("did n't" -> "didn't", "cat ." -> "cat.").
    return fast_tokenizer(tokenizer, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, model_max_length, clean_up=False)


def fast_tokenizer(backend: Tokenizer, bos: str, eos: str, pad: str, unk: str | None, model_max_length: int,
                   clean_up: bool = False) -> PreTrainedTokenizerFast:
    """`backend` as a transformers fast tokenizer in sentmim's convention: BOS sentence EOS, padded on the right."""
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk, padding_side="right",
        model_max_length=model_max_length, clean_up_tokenization_spaces=clean_up,
    )


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with `save_pretrained` (for example next to a trained model).

    It is always built as a `PreTrainedTokenizerFast` from tokenizer.json: a `tokenizer_class` or `auto_map` in the
    folder's tokenizer_config.json is ignored, so loading never runs code from the folder (AutoTokenizer would
    offer to)."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        where = "folder does not exist" if not os.path.isdir(path) else "folder has no tokenizer.json"
        raise ValueError(
            f"no tokenizer in {path!r} ({where}): train one with sentmim.tokenization.train_tokenizer(...) "
            f"and save it with tokenizer.save_pretrained({path!r})"
        )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.isfile(os.path.join(path, name)):
            read_json(os.path.join(path, name), "the tokenizer is damaged; copy the model folder again or retrain")
    try:
        return PreTrainedTokenizerFast.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - `tokenizers` raises plain Exceptions for a malformed tokenizer.json
        raise ValueError(
            f"{path}: the tokenizer could not be loaded ({first_line(error)}); copy the folder again or retrain"
        ) from None


def decode_keep_unknown(tokenizer: PreTrainedTokenizerFast, ids) -> list[str]:
    """Decode a batch of id sequences, stopping at the first EOS, dropping <pad> and <s> but keeping <unk>.

    `tokenizer.batch_decode(ids, skip_special_tokens=True)` also removes <unk>, because it is a special token. For
    PTB, whose references contain the word "<unk>", reconstruction BLEU should see it, so use this function there.
    `ids` may be a LongTensor [B, T] or a list of lists.
    """
    rows = ids.tolist() if hasattr(ids, "tolist") else [list(row) for row in ids]
    dropped = {tokenizer.pad_token_id, tokenizer.bos_token_id}
    texts = []
    for row in rows:
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode([i for i in row if i not in dropped], skip_special_tokens=False))
    return texts


# Above this share of tokens that are words the vocabulary lacks, training and evaluation warn, and evaluation flags
# its likelihoods: each such token leaves out what spelling its word would cost (several nats for a rare word), about
# 2 nats per 25-word sentence at 1%, the size of the differences between the models being compared.
UNKNOWN_WARNING_RATE = 0.01


def unknown_words_warning(num_unknown: int, num_unknown_in_text: int | None, num_tokens: int, of: str) -> str | None:
    """The start of a warning when more than UNKNOWN_WARNING_RATE of `of` (e.g. "the training tokens") are words the
    vocabulary lacks: unknown tokens other than those the text itself writes as the unknown token (PTB and WikiText
    write their rare words as "<unk>"). None otherwise, or when the text is not known (every unknown token might be
    the text's own). Callers add the remedy."""
    if num_unknown_in_text is None or not num_tokens:
        return None
    rate = (num_unknown - num_unknown_in_text) / num_tokens
    if rate <= UNKNOWN_WARNING_RATE:
        return None
    in_text = f" (another {num_unknown_in_text / num_tokens:.1%} are {UNK_TOKEN} in the text itself)" \
        if num_unknown_in_text else ""
    return f"{rate:.1%} of {of} are words the vocabulary lacks, read and written as {UNK_TOKEN}{in_text}"


# --- batch encoding ----------------------------------------------------------------------------------------------


def encode_batch(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """`tokenizer(texts)["input_ids"]` (BOS and EOS added, no truncation, no padding), computed faster.

    The tokenizers backend's `encode_batch_fast` skips the character offsets that the tokenizer call tracks and we
    never use (about 2x faster on PTB). When the backend is set up differently from what the tokenizer call would
    do (truncation, padding, special-token splitting), the tokenizer call itself gives the ids.
    """
    texts = list(texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is None  # a slow tokenizer
        or backend.truncation is not None  # the tokenizer call turns these off; do the same for the same ids
        or backend.padding is not None
        or backend.encode_special_tokens != tokenizer.split_special_tokens
    ):
        return tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=True)]
