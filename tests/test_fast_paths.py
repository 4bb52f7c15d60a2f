"""The library's fast paths compute the same numbers as the straightforward implementations (benchmarks/naive.py),
in float64: the training loss and its gradients (output layer on real targets only vs every position with
ignore_index) and the GRU encoder (one padded run vs a packed run). Decoding against prefix recomputation is in
test_generation.py, batched IW-NLL against a per-sample loop in test_metrics.py."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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


# ----------------------------------------------------------------------------------------------------------------
# The GRU layers: the written-out recurrence of the CPU against torch's GRU, and the accelerator branch


def torch_gru_reference(rnn, inputs, initial, lengths, sentence_inputs):
    """What the model computed before the recurrence was written out: torch's GRU on the inputs with the sentence
    inputs concatenated at every step; packed when there are lengths (every row's true final state)."""
    if sentence_inputs is not None:
        inputs = torch.cat([inputs, sentence_inputs[:, None].expand(-1, inputs.size(1), -1)], dim=-1)
    if lengths is None:
        return rnn(inputs, initial)
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    outputs, final = rnn(packed, initial)
    return pad_packed_sequence(outputs, batch_first=True, total_length=inputs.size(1))[0], final


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_sentence_inputs", [False, True])
@pytest.mark.parametrize("layout", ["no lengths", "padded run", "packed"])
def test_run_gru_equals_torch_gru_with_concatenated_inputs(monkeypatch, num_layers, with_sentence_inputs, layout):
    torch.manual_seed(0)
    batch_size, width, input_size, sentence_size, hidden = 4, 6, 5, 3, 7
    rnn = nn.GRU(input_size + (sentence_size if with_sentence_inputs else 0), hidden, num_layers, batch_first=True)
    rnn = rnn.double()
    inputs = torch.randn(batch_size, width, input_size, dtype=torch.float64, requires_grad=True)
    initial = torch.randn(num_layers, batch_size, hidden, dtype=torch.float64, requires_grad=True)
    sentence = torch.randn(batch_size, sentence_size, dtype=torch.float64, requires_grad=True)
    sentence = sentence if with_sentence_inputs else None
    lengths = None if layout == "no lengths" else torch.tensor([3, 6, 1, 4])  # rows in no particular order
    monkeypatch.setattr(modeling, "PADDED_RUN_MAX_PADDING", 1.0 if layout == "padded run" else 0.0)
    real = torch.ones(batch_size, width, 1, dtype=torch.float64)
    if lengths is not None:
        real = (torch.arange(width)[None] < lengths[:, None]).double()[:, :, None]
    weights = torch.randn(batch_size, width, hidden, dtype=torch.float64) * real  # a loss on the real outputs
    final_weights = torch.randn(num_layers, batch_size, hidden, dtype=torch.float64)
    leaves = [inputs, initial, *rnn.parameters()] + ([sentence] if sentence is not None else [])

    def outputs_and_gradients(function):
        outputs, final = function(rnn, inputs, initial, lengths, sentence)
        loss = (outputs * weights).sum() + (final * final_weights).sum()
        return outputs * real, final, torch.autograd.grad(loss, leaves)

    written_out = outputs_and_gradients(
        lambda *args: modeling.run_gru(args[0], args[1], args[2], args[3], sentence_inputs=args[4])
    )
    reference = outputs_and_gradients(torch_gru_reference)
    torch.testing.assert_close(written_out[0], reference[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(written_out[1], reference[1], rtol=0, atol=1e-12)
    for got, expected in zip(written_out[2], reference[2], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_gru_recurrence_passes_gradcheck():
    torch.manual_seed(0)
    batch_sizes = [3, 3, 2, 1]  # packed: rows finish one after another
    hidden = 2
    gates = torch.randn(sum(batch_sizes), 3 * hidden, dtype=torch.float64, requires_grad=True)
    initial = torch.randn(3, hidden, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3 * hidden, hidden, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3 * hidden, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *tensors: modeling.GRURecurrence.apply(*tensors, batch_sizes), (gates, initial, weight, bias)
    )


@pytest.mark.parametrize("architecture", ["gru", "transformer"])
@pytest.mark.parametrize("max_padding", [0.0, 1.0])  # the CPU skipping the padding, or running over it
def test_cpu_branch_equals_accelerator_branch(tiny_config, batch, monkeypatch, architecture, max_padding):
    """The accelerator branch is the straightforward computation: torch's GRU with z concatenated to every decoder
    input, every position through the output layer, padding masked. The CPU branch writes the recurrence out,
    computes z's share of the decoder's input products once per sentence, and projects only the real targets.
    Same weights, same loss and gradients in float64."""
    model = float64_model(tiny_config, architecture=architecture, num_layers=2, word_dropout=0.3)
    input_ids, attention_mask = batch
    monkeypatch.setattr(modeling, "PADDED_RUN_MAX_PADDING", max_padding)

    def loss():
        return model(input_ids, attention_mask=attention_mask, return_logits=False).loss

    cpu_loss, cpu_grads = loss_and_gradients(model, loss)
    monkeypatch.setattr(modeling, "values_are_free", lambda tensor: False)
    accelerator_loss, accelerator_grads = loss_and_gradients(model, loss)
    torch.testing.assert_close(cpu_loss, accelerator_loss, rtol=0, atol=1e-10)
    assert cpu_grads.keys() == accelerator_grads.keys()
    for name, grad in cpu_grads.items():
        torch.testing.assert_close(grad, accelerator_grads[name], rtol=0, atol=1e-10, msg=name)


def test_gru_weights_keep_their_names_and_shapes(tiny_config):
    """Saved models stay loadable: the decoder GRU still takes [embedding, z] as its first-layer input."""
    config = tiny_config()
    shapes = {name: tuple(tensor.shape) for name, tensor in SentenceMIMModel(config).state_dict().items()}
    inputs = config.embedding_size + config.latent_size
    assert shapes["decoder.rnn.weight_ih_l0"] == (3 * config.hidden_size, inputs)
    assert shapes["encoder.rnn.weight_ih_l0"] == (3 * config.hidden_size, config.embedding_size)
    assert {name for name in shapes if ".rnn." in name} == {
        f"{side}.rnn.{kind}_{part}_l0" for side in ("encoder", "decoder") for kind in ("weight", "bias")
        for part in ("ih", "hh")
    }


@pytest.mark.parametrize("architecture", ["gru", "transformer"])
def test_training_forward_and_backward_read_no_values_on_an_accelerator(tiny_config, batch, architecture):
    """On the meta device every value read (.item(), bool(), .tolist(), boolean-mask indexing) raises, as a host
    sync would stall a GPU: a training step there runs the accelerator branch without one."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(architecture=architecture, word_dropout=0.2)).to("meta").train()
    input_ids, attention_mask = (tensor.to("meta") for tensor in batch)
    out = model(input_ids, attention_mask=attention_mask, return_logits=False)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    assert all(parameter.grad is not None for parameter in model.parameters() if parameter.requires_grad)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the test can fail: meta refuses value reads
        input_ids[attention_mask.bool()]


def test_output_layer_nll_equals_cross_entropy_of_the_linear_layer():
    torch.manual_seed(0)
    features = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1, 2, 5, 4, 6])
    row_weights = torch.rand(9, dtype=torch.float64)  # a loss that weighs the rows unequally
    leaves = (features, weight, bias)
    expected = torch.nn.functional.cross_entropy(features @ weight.t() + bias, targets, reduction="none")
    fused = modeling.OutputLayerNLL.apply(features, weight, bias, targets, True)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-12)
    for got, want in zip(torch.autograd.grad((fused * row_weights).sum(), leaves),
                         torch.autograd.grad((expected * row_weights).sum(), leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    with torch.no_grad():  # evaluation: the same losses without keeping the gradient
        torch.testing.assert_close(modeling.OutputLayerNLL.apply(features, weight, bias, targets, False), expected)
    assert torch.autograd.gradcheck(
        lambda *tensors: modeling.OutputLayerNLL.apply(*tensors, targets, True), leaves
    )
