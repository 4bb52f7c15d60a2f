"""A tiny model must be able to memorise a handful of sentences: the end-to-end sanity check of the objectives."""

import pytest
import torch

from sentmim import SentenceMIMModel

SENTENCES = [
    [5, 6, 7, 8],
    [9, 10, 11],
    [12, 13, 14, 15, 16],
    [6, 5, 8, 7],
    [17, 18],
    [19, 20, 21, 22, 5],
    [10, 9, 12],
    [13, 17, 19, 6, 8, 11],
]


def padded_batch():
    rows = [[2, *sentence, 3] for sentence in SENTENCES]
    width = max(map(len, rows))
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


@pytest.mark.parametrize("objective", ["mim", "ae"])
@pytest.mark.parametrize("architecture", ["gru", "transformer"])
def test_tiny_model_reconstructs_eight_sentences_exactly(tiny_config, objective, architecture):
    torch.manual_seed(0)
    model = SentenceMIMModel(
        tiny_config(objective=objective, architecture=architecture, embedding_size=32, hidden_size=64, latent_size=16)
    )
    input_ids = padded_batch()
    expected = [[*sentence, 3] for sentence in SENTENCES]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, 1001):
        optimizer.zero_grad()
        model(input_ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            model.eval()
            decoded = model.decode(model.encode(input_ids)[0], max_length=10).tolist()
            model.train()
            if [row[: len(target)] for row, target in zip(decoded, expected, strict=True)] == expected:
                return
    raise AssertionError(f"not reconstructed after {step} steps: {decoded}")
