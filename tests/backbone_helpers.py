"""Tiny, randomly initialised Hugging Face backbones and tokenizers, built here (no network, no Hub).

Each tokenizer is the family's own transformers class with the family's special-token conventions, over a small
vocabulary trained with `tokenizers` on SENTENCES:
    bart   RobertaTokenizer   <s>=0 <pad>=1 </s>=2 <unk>=3, adds <s> ... </s>     (nothing to add)
    t5     T5Tokenizer        <pad>=0 </s>=1 <unk>=2, adds ... </s>               (no BOS)
    gpt2   GPT2Tokenizer      <|endoftext|> is BOS, EOS and unknown; adds nothing  (no pad, no distinct BOS)
    llama  LlamaTokenizer     <unk>=0 <s>=1 </s>=2, adds <s> ...                   (no pad)
    qwen2  Qwen2Tokenizer     <|endoftext|> is EOS and pad; no BOS                (no BOS, pad == EOS)
"""

import json

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BartConfig,
    GPT2Config,
    GPT2Tokenizer,
    LlamaConfig,
    LlamaTokenizer,
    Qwen2Config,
    Qwen2Tokenizer,
    RobertaTokenizer,
    T5Config,
    T5Tokenizer,
)

FAMILIES = ("bart", "t5", "gpt2", "llama", "qwen2")
WIDTH = 16  # model width of every tiny backbone

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran in the park .",
    "the bird sang a short song .",
    "she read the old book again .",
    "we walked home in the rain .",
    "the market opened at nine .",
    "he painted the fence green .",
    "a small boat crossed the lake .",
    "they ate bread and cheese .",
    "the train was late today .",
    "my sister plays the piano .",
    "the wind moved the tall trees .",
]


def _byte_level_bpe(special_tokens: list[str]) -> tuple[dict, list]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return _vocab_and_merges(tokenizer)


def _vocab_and_merges(tokenizer: Tokenizer) -> tuple[dict, list]:
    spec = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in spec["merges"]]
    return spec["vocab"], merges


def make_tokenizer(family: str):
    if family == "bart":
        vocab, merges = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return RobertaTokenizer(vocab=vocab, merges=merges)
    if family == "gpt2":
        vocab, merges = _byte_level_bpe(["<|endoftext|>"])
        return GPT2Tokenizer(vocab=vocab, merges=merges)
    if family == "qwen2":
        vocab, merges = _byte_level_bpe(["<|endoftext|>"])
        return Qwen2Tokenizer(vocab=vocab, merges=merges)
    if family == "llama":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
        tokenizer.train_from_iterator(SENTENCES, trainer)
        vocab, merges = _vocab_and_merges(tokenizer)
        return LlamaTokenizer(vocab=vocab, merges=merges)
    if family == "t5":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=100, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
        )
        tokenizer.train_from_iterator(SENTENCES, trainer)
        pieces = [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
        return T5Tokenizer(vocab=pieces, extra_ids=2)
    raise ValueError(family)


def make_backbone(family: str, tokenizer):
    """A tiny random backbone whose vocabulary fits the tokenizer (T5's has spare rows, as the real T5 has)."""
    torch.manual_seed(0)
    vocab_size = len(tokenizer)
    small = dict(vocab_size=vocab_size, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    if family == "bart":
        config = BartConfig(
            **small, d_model=WIDTH, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=40,
            decoder_start_token_id=tokenizer.eos_token_id, dropout=0.0, attention_dropout=0.0,
        )
    elif family == "t5":
        config = T5Config(
            **{**small, "vocab_size": vocab_size + 4}, d_model=WIDTH, d_kv=8, d_ff=32, num_layers=1,
            num_decoder_layers=2, num_heads=2, decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,
        )
    elif family == "gpt2":
        config = GPT2Config(**small, n_embd=WIDTH, n_layer=2, n_head=2, n_positions=40, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0)
    elif family in ("llama", "qwen2"):
        config_class = LlamaConfig if family == "llama" else Qwen2Config
        if family == "qwen2":  # as Qwen2's own configs: <|endoftext|> is the BOS, and no pad token is named
            small.update(bos_token_id=tokenizer.eos_token_id, pad_token_id=None)
        config = config_class(**small, hidden_size=WIDTH, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=40,
                              tie_word_embeddings=family == "qwen2")
    else:
        raise ValueError(family)
    auto_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return auto_class.from_config(config).eval()


def save_backbone(family: str, folder) -> str:
    """Save a tiny backbone and its tokenizer as a Hub repository would hold them; returns the folder."""
    tokenizer = make_tokenizer(family)
    make_backbone(family, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def fit(model, input_ids, attention_mask, steps: int, learning_rate: float = 1e-2):
    """`steps` Adam steps on one batch, on the parameters that require gradients; leaves the model in eval mode."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    for _ in range(steps):
        loss = model(input_ids, attention_mask=attention_mask, return_logits=False).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
