"""A fine-tuned word-level model learns a new domain's words (`--extend-vocabulary N`).

    tokenizer, extension = extend_tokenizer(tokenizer, train_texts, max_new_words=5000, min_frequency=2)
    grow_model(model, extension)       # embedding and output layer get a row for every new word

Fine-tuning keeps the trained model's vocabulary, so the words of the new domain that it lacks all become <unk>.
Extending adds the most frequent of them as new tokens, with ids after the existing ones, so every id the model
knows keeps its meaning. The new rows start from what the model already does with <unk>, so that before its first
step the extended model is the model it was (the initialisation and why it works: docs/finetuning.md).
"""

import itertools
import math
from collections import Counter
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from .preprocessing import distinct_unknown_id
from .tokenization import iterate_texts


@dataclass
class VocabularyExtension:
    """What `extend_tokenizer` added: the new words in id order with their counts, the unknown tokens of the data
    before extending (all of them, and those written as the unknown token in the text), and the number of tokens."""

    old_size: int
    words: list[str]
    counts: list[int]
    num_unknown: int
    num_unknown_in_text: int
    num_tokens: int

    @property
    def num_unknown_after(self) -> int:
        return self.num_unknown - sum(self.counts)


def count_unknown_words(tokenizer, texts, batch_size: int = 1000) -> tuple[Counter, int, int]:
    """(words the vocabulary lacks, with their counts; unknown tokens written as such in the text; tokens), over
    `texts` without BOS and EOS. A word is counted as the vocabulary would hold it (after the tokenizer's
    normalizer, e.g. lowercased)."""
    backend, unknown_id = tokenizer.backend_tokenizer, distinct_unknown_id(tokenizer)
    normalize = backend.normalizer.normalize_str if backend.normalizer is not None else str
    words, in_text, num_tokens = Counter(), 0, 0
    texts = iterate_texts(texts)
    while batch := list(itertools.islice(texts, batch_size)):
        for text, encoding in zip(batch, backend.encode_batch(batch, add_special_tokens=False), strict=True):
            num_tokens += len(encoding.ids)
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
                if token_id == unknown_id:
                    word = text[start:end]
                    if word == tokenizer.unk_token:
                        in_text += 1
                    else:
                        words[normalize(word)] += 1
    return words, in_text, num_tokens


def check_word_level(tokenizer) -> None:
    """Refuse a tokenizer that is not word-level: only a word-level vocabulary has unknown words to add."""
    kind = type(tokenizer.backend_tokenizer.model).__name__
    if kind != "WordLevel":
        why = ": byte-level BPE never maps text to an unknown token" if kind == "BPE" else ""
        raise ValueError(f"--extend-vocabulary extends word-level vocabularies; this model's tokenizer is {kind}{why}")


def extend_tokenizer(tokenizer, texts, max_new_words: int, min_frequency: int = 1):
    """(the tokenizer with up to `max_new_words` new words, the `VocabularyExtension`): the words of `texts` that the
    word-level vocabulary lacks, seen at least `min_frequency` times, most frequent first (ties alphabetically), with
    ids after the existing ones."""
    check_word_level(tokenizer)
    backend = tokenizer.backend_tokenizer
    words, in_text, num_tokens = count_unknown_words(tokenizer, texts)
    ranked = sorted(((count, word) for word, count in words.items() if count >= max(min_frequency, 1)),
                    key=lambda pair: (-pair[0], pair[1]))[:max_new_words]
    vocabulary = backend.get_vocab(with_added_tokens=True)
    old_size = len(tokenizer)
    if sorted(vocabulary.values()) != list(range(old_size)):
        raise ValueError("--extend-vocabulary: the tokenizer's ids are not 0 .. size - 1; it cannot be extended")
    extended = Tokenizer.from_str(backend.to_str())
    extended.model = models.WordLevel(
        vocab={**vocabulary, **{word: old_size + index for index, (_, word) in enumerate(ranked)}},
        unk_token=backend.model.unk_token,
    )
    new_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=extended, pad_token=tokenizer.pad_token, unk_token=tokenizer.unk_token,
        bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side, clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
    )
    extension = VocabularyExtension(
        old_size=old_size, words=[word for _, word in ranked], counts=[count for count, _ in ranked],
        num_unknown=sum(words.values()) + in_text, num_unknown_in_text=in_text, num_tokens=num_tokens,
    )
    return new_tokenizer, extension


@torch.no_grad()
def grow_model(model, extension: VocabularyExtension) -> None:
    """Give `model` a row per new word in its embedding and output layer, initialised as docs/finetuning.md says:
    the <unk> row's embedding and weights, and <unk>'s bias shared out by the new words' counts (transformers'
    `resize_token_embeddings` resizes, keeps the tie, and updates config.vocab_size)."""
    if model.config.architecture == "backbone":
        raise ValueError("--extend-vocabulary: a pretrained backbone keeps its own vocabulary")
    if model.config.vocab_size != extension.old_size:
        raise ValueError(f"the model has {model.config.vocab_size} tokens but its tokenizer {extension.old_size}")
    if not extension.words:
        return
    unknown, old_size = model.config.unk_token_id, extension.old_size
    model.resize_token_embeddings(old_size + len(extension.words), mean_resizing=False)
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    embedding[old_size:] = embedding[unknown]
    head.weight[old_size:] = head.weight[unknown]  # the same tensor when tied: nothing changes then
    total = extension.num_unknown + 1
    counts = torch.tensor(extension.counts, dtype=torch.float64)
    head.bias[old_size:] = (head.bias[unknown].double() + torch.log(counts / total)).to(head.bias.dtype)
    head.bias[unknown] += math.log((total - counts.sum().item()) / total)
