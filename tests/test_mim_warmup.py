"""The MIM warm-up (--mim-warmup-steps): the weight w_t of the two prior terms rises linearly from 0 to 1, after which
the objective is the paper's; checked in the objective, in the training loop (applied and logged at every step) and
in the options."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal

from sentmim import SentenceMIMConfig, SentenceMIMModel, objectives
from sentmim.options import OptionError, TrainingOptions, check_resume
from sentmim.training import train


def test_the_weight_rises_linearly_over_the_warmup_then_holds_at_one():
    weights = [objectives.mim_prior_weight(step, SimpleNamespace(mim_warmup_steps=4)) for step in range(7)]
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert objectives.mim_prior_weight(0, SimpleNamespace(mim_warmup_steps=0)) == 1.0  # the paper's, from step 0
    assert objectives.mim_prior_weight(3, TrainingOptions(output_dir="x")) == 1.0  # the default is the paper's


def test_the_weight_multiplies_both_prior_terms_in_float64():
    torch.manual_seed(0)
    mean, logvar = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    z, ll = torch.randn(4, 3, dtype=torch.float64), -torch.rand(4, dtype=torch.float64) * 20
    for weight in (0.0, 0.3, 1.0):
        loss = objectives.mim_loss(ll, z, mean, logvar, prior_weight=weight)
        for i in range(4):
            log_q = sum(Normal(mean[i, d], math.exp(logvar[i, d] / 2)).log_prob(z[i, d]).item() for d in range(3))
            log_p = sum(Normal(0.0, 1.0).log_prob(z[i, d]).item() for d in range(3))
            assert loss[i].item() == pytest.approx(-ll[i].item() - weight / 2 * (log_q + log_p), rel=1e-12)
    assert torch.equal(objectives.mim_loss(ll, z, mean, logvar), objectives.mim_loss(ll, z, mean, logvar, 1.0))


class RecordingModel(SentenceMIMModel):
    """Records the prior weight and the outputs of every training forward pass."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.training:
            self.calls.append((kwargs.get("prior_weight"), out))
        return out


def test_the_training_loop_applies_and_logs_the_warmup_weight_at_every_step(builtin_splits, tmp_path):
    tokenizer, splits = builtin_splits
    torch.manual_seed(0)
    model = RecordingModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, latent_size=8, objective="mim",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    model.calls = []
    options = TrainingOptions(output_dir=str(tmp_path), batch_size=16, max_steps=7, eval_steps=7, logging_steps=1,
                              disable_tqdm=True, mim_warmup_steps=4)
    train(model, tokenizer, {"train": splits["train"]}, options)
    expected = [min(1.0, step / 4) for step in range(7)]
    assert [weight for weight, _ in model.calls] == expected
    for weight, out in model.calls:  # the loss the optimiser saw is the warm-up's objective at that weight
        z, mean, logvar = out.z.double(), out.mean.double(), out.logvar.double()
        prior_terms = (Normal(mean, (logvar / 2).exp()).log_prob(z).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1))
        direct = (-out.log_likelihood.double() - weight / 2 * prior_terms).mean()
        assert out.loss.item() == pytest.approx(direct.item(), rel=1e-5)
    records = [json.loads(line) for line in (Path(tmp_path) / "log.jsonl").read_text().splitlines()]
    logged = [record["mim_prior_weight"] for record in records if "train_loss" in record]
    assert logged == expected  # the record of step s is the update made at 0-based step s - 1


def test_the_option_is_checked_and_a_resume_may_not_change_it():
    with pytest.raises(OptionError, match="mim_warmup_steps=-1 is invalid: must be an integer >= 0"):
        TrainingOptions(output_dir="x", mim_warmup_steps=-1)
    saved = vars(TrainingOptions(output_dir="x", mim_warmup_steps=100)).copy()
    changed = TrainingOptions(output_dir="x", mim_warmup_steps=200)
    with pytest.raises(ValueError, match="option mim_warmup_steps was 100 when this run started"):
        check_resume(saved, vars(changed), changed, "training_args.json")
