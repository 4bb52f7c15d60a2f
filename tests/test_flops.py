"""benchmarks/flops.py counts the matrix products a GRU model really runs, measured by torch's FLOP counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import flops
from sentmim import SentenceMIMModel


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gru_training_flops_match_the_counted_matrix_products(tiny_config, num_layers):
    config = tiny_config(num_layers=num_layers, tie_word_embeddings=num_layers == 2)
    torch.manual_seed(0)
    model = SentenceMIMModel(config).train()
    batch_size, length = 3, 7  # no padding: every position is real work
    input_ids = torch.randint(4, config.vocab_size, (batch_size, length))
    input_ids[:, 0], input_ids[:, -1] = config.bos_token_id, config.eos_token_id
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids, return_logits=False).loss.backward()
    hidden, latent = config.hidden_size, config.latent_size
    # What flops.py leaves out as small: per sentence, the posterior and initial-state projections and z's share of
    # the decoder's first-layer input products (forward 2 FLOPs per multiply-add, training 3x).
    per_sentence = 2 * (num_layers * hidden * 2 * latent + latent * num_layers * hidden + latent * 3 * hidden)
    expected = flops.training_flops(config, [length] * batch_size) + 3 * batch_size * per_sentence
    assert counter.get_total_flops() == expected
