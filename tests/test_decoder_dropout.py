"""Word dropout and decoder embedding dropout: training-only, decoder-only, and exactly what they say."""

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel


@pytest.mark.parametrize("architecture", ["gru", "transformer"])
def test_word_dropout_replaces_words_by_unk_with_the_drawn_mask(tiny_config, batch, architecture):
    input_ids, _ = batch
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(architecture=architecture, word_dropout=0.4))
    decoder_input_ids, z = input_ids[:, :-1], torch.randn(3, 4)

    # The mask by hand from the same random draws: never BOS (position 0), never padding.
    torch.manual_seed(1)
    drawn = torch.rand(decoder_input_ids.shape) < 0.4
    expected_ids = decoder_input_ids.clone()
    for row in range(decoder_input_ids.size(0)):
        for position in range(1, decoder_input_ids.size(1)):
            if drawn[row, position] and decoder_input_ids[row, position] != 0:
                expected_ids[row, position] = model.config.unk_token_id
    assert (expected_ids != decoder_input_ids).any(), "the draw replaced nothing: pick another seed"

    model.train()
    torch.manual_seed(1)
    dropped = model._teacher_forced_hidden(decoder_input_ids, z)
    model.eval()
    assert torch.allclose(dropped, model._teacher_forced_hidden(expected_ids, z), atol=1e-6)
    assert not torch.allclose(dropped, model._teacher_forced_hidden(decoder_input_ids, z), atol=1e-4)


def test_word_dropout_rate_and_protected_positions():
    config = SentenceMIMConfig(vocab_size=50, embedding_size=4, hidden_size=4, latent_size=2, word_dropout=0.3)
    model = SentenceMIMModel(config)
    ids = torch.randint(4, 50, (400, 30))
    ids[:, 0] = config.bos_token_id
    ids[:, 20:] = config.pad_token_id
    torch.manual_seed(0)
    dropped = model._drop_words(ids)
    replaced = dropped != ids
    assert not replaced[:, 0].any() and not replaced[:, 20:].any()
    assert (dropped[replaced] == config.unk_token_id).all()
    assert abs(replaced[:, 1:20].float().mean().item() - 0.3) < 0.02  # 7,600 draws: sd 0.005


@pytest.mark.parametrize("field", ["word_dropout", "embedding_dropout"])
def test_decoder_dropouts_leave_the_encoder_and_evaluation_alone(tiny_config, batch, field):
    input_ids, attention_mask = batch
    torch.manual_seed(0)
    plain = SentenceMIMModel(tiny_config(objective="ae"))
    dropped = SentenceMIMModel(tiny_config(objective="ae", **{field: 0.5}))
    dropped.load_state_dict(plain.state_dict())

    dropped.train()
    for dropped_part, plain_part in zip(dropped.encode(input_ids, attention_mask),
                                        plain.encode(input_ids, attention_mask), strict=True):
        assert torch.equal(dropped_part, plain_part)  # the encoder reads every word, undropped
    torch.manual_seed(2)
    assert not torch.allclose(dropped(input_ids, attention_mask).loss, plain(input_ids, attention_mask).loss)

    dropped.eval(), plain.eval()
    assert torch.equal(dropped(input_ids, attention_mask).loss, plain(input_ids, attention_mask).loss)


def test_embedding_dropout_scales_kept_decoder_inputs(tiny_config, batch):
    input_ids, _ = batch
    model = SentenceMIMModel(tiny_config(embedding_dropout=0.5))
    model.train()
    torch.manual_seed(3)
    embeds = model.embed_tokens(input_ids)
    out = model.decoder_input_dropout(embeds)
    kept = out != 0
    assert torch.allclose(out[kept], 2.0 * embeds[kept])  # inverted dropout: survivors scaled by 1 / (1 - p)
    assert 0.3 < kept.float().mean().item() < 0.7


@pytest.mark.parametrize("field", ["word_dropout", "embedding_dropout"])
def test_decoder_dropout_outside_unit_interval_is_refused(field):
    with pytest.raises(ValueError, match=f"SentenceMIMConfig.{field}=1.0"):
        SentenceMIMConfig(**{field: 1.0})
