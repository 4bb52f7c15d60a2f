"""A plain GRU language model p(x) = prod_t p(x_t | x_<t), no latent: the reference that scores decoded samples.

    lm = train_language_model(tokenized["train"], tokenized["validation"], vocab_size=len(tokenizer),
                              pad_token_id=tokenizer.pad_token_id, embedding_size=128, hidden_size=256,
                              max_steps=2000, batch_size=20, learning_rate=2e-3)
    ppl = metrics.language_model_perplexity(lm.log_likelihood, batches)     # the samples' LM perplexity
    lm.save(folder); lm = GRULanguageModel.load(folder)

Why a separate model and not one of the compared ones: docs/metrics.md, "LM perplexity of samples".
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import metrics
from .batching import make_dataloader
from .files import TMP_PREFIX, replace_durably, write_json_atomic

WEIGHTS_FILE = "language_model.safetensors"
CONFIG_FILE = "language_model.json"


@dataclass
class LanguageModelConfig:
    vocab_size: int
    pad_token_id: int
    embedding_size: int = 128
    hidden_size: int = 256


class GRULanguageModel(nn.Module):
    """Embedding -> one-layer GRU -> linear output layer over the vocabulary; BOS starts every sentence."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.gru = nn.GRU(config.embedding_size, config.hidden_size, batch_first=True)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def log_likelihood(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per sentence [B]: targets input_ids[:, 1:] where attention_mask[:, 1:] is 1 (words and
        EOS; BOS is given), right-padded rows."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden, _ = self.gru(self.embed_tokens(input_ids[:, :-1]))
        logits = self.lm_head(hidden).float()
        targets = input_ids[:, 1:]
        token_nll = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return -(token_nll.view_as(targets) * attention_mask[:, 1:]).sum(1)

    # -- storage: safetensors and JSON only ---------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, extra: dict | None = None) -> Path:
        """folder/language_model.safetensors and folder/language_model.json (the config, plus `extra`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{TMP_PREFIX}{WEIGHTS_FILE}"
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(tensors, temporary)
        replace_durably(temporary, folder / WEIGHTS_FILE)
        write_json_atomic(folder / CONFIG_FILE, {**asdict(self.config), **(extra or {})})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GRULanguageModel:
        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise ValueError(f"{folder}: no {WEIGHTS_FILE} and {CONFIG_FILE} here; train the language model again")
        fields = json.loads((folder / CONFIG_FILE).read_text())
        names = LanguageModelConfig.__dataclass_fields__
        model = cls(LanguageModelConfig(**{name: fields[name] for name in names}))
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return model.eval()


def perplexity_on(model: GRULanguageModel, batches) -> float:
    """exp(-sum log p(x) / sum predicted targets) over the batches (eval mode)."""
    model.eval()
    return metrics.language_model_perplexity(model.log_likelihood, batches)


def train_language_model(
    train_split, validation_split, vocab_size: int, pad_token_id: int, embedding_size: int = 128,
    hidden_size: int = 256, max_steps: int = 2000, batch_size: int = 20, learning_rate: float = 2e-3,
    eval_steps: int = 400, max_grad_norm: float = 5.0, seed: int = 0,
) -> tuple[GRULanguageModel, dict]:
    """Train on a tokenized split ("input_ids" column) with Adam for max_steps, validating every eval_steps; returns
    the model with the best validation perplexity and {"steps", "best_step", "validation_ppl"}."""
    torch.manual_seed(seed)
    model = GRULanguageModel(LanguageModelConfig(vocab_size, pad_token_id, embedding_size, hidden_size))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    train_loader = make_dataloader(train_split, batch_size, pad_token_id, shuffle=True, seed=seed)
    validation_loader = make_dataloader(validation_split, 128, pad_token_id, shuffle=False)
    best = {"validation_ppl": math.inf, "best_step": 0, "state": None}
    step, epoch = 0, 0
    while step < max_steps:
        train_loader.batch_sampler.set_epoch(epoch)
        for batch in train_loader:
            model.train()
            targets = batch["attention_mask"][:, 1:].sum().clamp(min=1)
            loss = -model.log_likelihood(batch["input_ids"], batch["attention_mask"]).sum() / targets
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            step += 1
            if step % eval_steps == 0 or step == max_steps:
                ppl = perplexity_on(model, validation_loader)
                if ppl < best["validation_ppl"]:
                    best = {"validation_ppl": ppl, "best_step": step, "state": copy.deepcopy(model.state_dict())}
            if step == max_steps:
                break
        epoch += 1
    model.load_state_dict(best["state"])
    return model.eval(), {"steps": step, "best_step": best["best_step"], "validation_ppl": best["validation_ppl"]}
