"""The library's fast paths compute the same numbers as the straightforward implementations (benchmarks/naive.py),
in float64: the training loss and its gradients (output layer on real targets only vs every position with
ignore_index) and the GRU encoder (one padded run vs a packed run). Decoding against prefix recomputation is in
test_generation.py, batched IW-NLL against a per-sample loop in test_metrics.py."""

import pytest
import torch

from benchmarks import naive
from sentmim import SentenceMIMModel, modeling


def float64_model(tiny_config, **overrides) -> SentenceMIMModel:
    torch.manual_seed(0)
    return SentenceMIMModel(tiny_config(**overrides)).double().train()


def loss_and_gradients(model, loss_fn) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same z ~ q(z|x) for both paths
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("architecture", ["gru", "transformer"])
@pytest.mark.parametrize("objective", ["mim", "vae", "ae"])
def test_loss_and_gradients_equal_padded_full_projection(tiny_config, batch, architecture, objective):
    model = float64_model(tiny_config, architecture=architecture, objective=objective)
    input_ids, attention_mask = batch
    fast, fast_grads = loss_and_gradients(
        model, lambda: model(input_ids, attention_mask=attention_mask, kl_weight=0.3, return_logits=False).loss
    )
    slow, slow_grads = loss_and_gradients(
        model, lambda: naive.padded_loss(model, input_ids, attention_mask, kl_weight=0.3)
    )
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) == len(list(model.parameters()))
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, slow_grads[name], rtol=0, atol=1e-10, msg=name)


def test_padded_log_likelihood_equals_library_log_likelihood(tiny_config, batch):
    model = float64_model(tiny_config).eval()
    input_ids, attention_mask = batch
    z = torch.randn(3, model.config.latent_size, dtype=torch.float64)
    torch.testing.assert_close(
        model.log_likelihood(input_ids, z, attention_mask),
        naive.padded_log_likelihood(model, input_ids, z, attention_mask), rtol=0, atol=1e-10,
    )


@pytest.mark.parametrize("reverse_input", [False, True])
def test_gru_encoder_padded_run_equals_packed_run(tiny_config, batch, monkeypatch, reverse_input):
    model = float64_model(tiny_config, reverse_input=reverse_input)
    input_ids, attention_mask = batch  # a third of it is padding
    results = []
    for max_padding in (1.0, 0.0):  # always the padded run, then always the packed run
        monkeypatch.setattr(modeling, "PADDED_RUN_MAX_PADDING", max_padding)
        results.append(loss_and_gradients(model, lambda: model(input_ids, attention_mask=attention_mask).loss))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    torch.testing.assert_close(padded_loss, packed_loss, rtol=0, atol=1e-10)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(grad, packed_grads[name], rtol=0, atol=1e-10, msg=name)
