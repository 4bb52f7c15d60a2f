"""--extend-vocabulary (sentmim.vocabulary): which words are added, that every old id keeps its meaning, that the
grown model is the model it was (checked against the closed form of the split <unk> mass, tied and untied output
layers), and that an extended fine-tuning run saves, loads and resumes exactly."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from sentmim import SentenceMIMConfig, SentenceMIMModel
from sentmim.cli import main
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.tokenization import load_tokenizer, train_tokenizer
from sentmim.vocabulary import count_unknown_words, extend_tokenizer, grow_model
from tests.conftest import cli_error_line, run_cli

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

OLD_TEXTS = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang ."] * 2
NEW_TEXTS = [
    "the zebra sat on the yak .",
    "a Zebra ran in the <unk> park .",
    "the zebra and the quokka sang .",
    "a yak ran after the zebra .",
]  # unknown: zebra 3 (+ Zebra 1 unless lowercased), yak 2, quokka 1, and 1, after 1; one <unk> written in the text


@pytest.fixture
def tokenizer():
    return train_tokenizer(OLD_TEXTS, kind="word")


@pytest.mark.parametrize("lowercase", [False, True])
def test_counts_of_missing_words_match_a_direct_count(lowercase):
    tokenizer = train_tokenizer(OLD_TEXTS, kind="word", lowercase=lowercase)
    vocabulary = tokenizer.get_vocab()
    expected, in_text, tokens = {}, 0, 0
    for text in NEW_TEXTS:
        for word in (text.lower() if lowercase else text).split():
            tokens += 1
            if word == "<unk>":
                in_text += 1
            elif word not in vocabulary:
                expected[word] = expected.get(word, 0) + 1
    words, counted_in_text, counted_tokens = count_unknown_words(tokenizer, NEW_TEXTS, batch_size=3)
    assert (dict(words), counted_in_text, counted_tokens) == (expected, in_text, tokens)
    assert words["zebra"] == (4 if lowercase else 3)


def test_extension_appends_the_most_frequent_missing_words(tokenizer, tmp_path):
    extended, extension = extend_tokenizer(tokenizer, NEW_TEXTS, max_new_words=2, min_frequency=1)
    old = tokenizer.get_vocab()
    assert extension.words == ["zebra", "yak"] and extension.counts == [3, 2]
    assert {word: extended.get_vocab()[word] for word in old} == old  # every old id keeps its word
    assert [extended.get_vocab()[word] for word in extension.words] == [len(old), len(old) + 1]
    assert extension.num_unknown == 3 + 2 + 1 + 1 + 1 + 1 + 1  # zebra, yak, Zebra, quokka, and, after, the <unk>
    assert extension.num_unknown_after == 5 and extension.num_unknown_in_text == 1
    ids = extended("the zebra met a yak")["input_ids"]
    assert ids == [2, old["the"], len(old), 1, old["a"], len(old) + 1, 3]
    extended.save_pretrained(tmp_path)  # a plain word-level tokenizer again: saved and loaded like any other
    assert load_tokenizer(tmp_path)("the zebra met a yak")["input_ids"] == ids
    assert extend_tokenizer(tokenizer, NEW_TEXTS, 10, min_frequency=2)[1].words == ["zebra", "yak"]


def test_only_word_level_vocabularies_are_extended():
    bpe = train_tokenizer(OLD_TEXTS * 20, kind="bpe", vocab_size=300)
    with pytest.raises(ValueError, match="extends word-level vocabularies; .* BPE: byte-level BPE never maps"):
        extend_tokenizer(bpe, NEW_TEXTS, 5)


def log_likelihoods(model, tokenizer, texts, z):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return model.log_likelihood(encoded["input_ids"], z, encoded["attention_mask"]).double()


@pytest.mark.parametrize("tie", [False, True])
def test_the_grown_model_is_the_model_it_was(tokenizer, tie):
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16,
                                               latent_size=4, tie_word_embeddings=tie)).eval()
    with torch.no_grad():  # a <unk> row unlike the others, so that copying the wrong row would show
        model.get_output_embeddings().bias[1] = 0.7
    extended, extension = extend_tokenizer(tokenizer, NEW_TEXTS, max_new_words=3)
    old_rows = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    z = torch.randn(len(NEW_TEXTS), 4)
    before = log_likelihoods(model, tokenizer, NEW_TEXTS, z)
    old_encoding = tokenizer(NEW_TEXTS, padding=True, return_tensors="pt")
    mean_before = model.encode(old_encoding["input_ids"], old_encoding["attention_mask"])[0]
    grow_model(model, extension)

    assert model.config.vocab_size == len(extended) == len(tokenizer) + 3
    # Everything the model knew is kept bit for bit: every weight, and every old row of the grown ones (but the
    # bias of <unk>, whose probability is shared out below).
    unknown, old_size = model.config.unk_token_id, len(tokenizer)
    for name, tensor in model.state_dict().items():
        kept, old = (tensor[:old_size] if tensor.shape != old_rows[name].shape else tensor), old_rows[name]
        if name == "lm_head.bias":
            assert kept[unknown] != old[unknown]
            others = torch.arange(old_size) != unknown
            kept, old = kept[others], old[others]
        assert torch.equal(kept, old), name
    assert torch.equal(model.get_input_embeddings().weight[old_size:],
                       old_rows["embed_tokens.weight"][unknown].expand(3, -1))  # a new word starts as <unk> read
    assert (model.lm_head.weight is model.embed_tokens.weight) == tie
    new_encoding = extended(NEW_TEXTS, padding=True, return_tensors="pt")
    assert torch.allclose(model.encode(new_encoding["input_ids"], new_encoding["attention_mask"])[0], mean_before,
                          atol=1e-6)  # a new word reads as <unk> did
    # Closed form: <unk>'s probability is shared out by the new data's counts, with one count added to <unk>.
    total = extension.num_unknown + 1
    share = {word: count / total for word, count in zip(extension.words, extension.counts, strict=True)}
    unknown_share = 1 - sum(share.values())
    expected = before.clone()
    for row, text in enumerate(NEW_TEXTS):
        for word in text.split():
            if word in share:
                expected[row] += math.log(share[word])
            elif extended.convert_tokens_to_ids(word) == 1:
                expected[row] += math.log(unknown_share)
    assert torch.allclose(log_likelihoods(model, extended, NEW_TEXTS, z), expected, atol=1e-4)
    # A sentence of known words keeps its probability exactly: the softmax's normaliser has not moved.
    known = ["the cat sat on the mat ."]
    assert torch.allclose(log_likelihoods(model, extended, known, z[:1]), before.new_tensor(
        log_likelihoods_before(tokenizer, tie, known, z[:1])), atol=1e-5)


def log_likelihoods_before(tokenizer, tie, texts, z):
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16,
                                               latent_size=4, tie_word_embeddings=tie)).eval()
    with torch.no_grad():
        model.get_output_embeddings().bias[1] = 0.7
    return log_likelihoods(model, tokenizer, texts, z).tolist()


# -- through `sentmim train --init-from ... --extend-vocabulary N` ----------------------------------------------------

TINY = ["--max-length", "16", "--embedding-size", "8", "--hidden-size", "8", "--latent-size", "4", "--batch-size", "4",
        "--eval-steps", "2", "--tokenizer", "word", "--validation-fraction", "0.2"]


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    folder = tmp_path_factory.mktemp("domains")
    (folder / "old.txt").write_text("\n".join(OLD_TEXTS * 5) + "\n")
    (folder / "new.txt").write_text("\n".join(NEW_TEXTS * 5) + "\n")
    return folder


@pytest.fixture(scope="module")
def old_model(domains, tmp_path_factory):
    """A tiny word-level model with a tied output layer, trained 2 steps on the old domain."""
    output = tmp_path_factory.mktemp("old") / "run"
    assert main(["train", "--dataset", str(domains / "old.txt"), "--output-dir", str(output), "--max-steps", "2",
                 *TINY, "--tie-word-embeddings", "true"]) == 0
    return output


def test_fine_tuning_extends_saves_and_resumes_exactly(domains, old_model, tmp_path, capsys):
    command = ["train", "--dataset", domains / "new.txt", "--init-from", old_model, "--extend-vocabulary", "2",
               *TINY]
    status, out, err = run_cli(capsys, *command, "--output-dir", tmp_path / "full", "--max-steps", "4")
    assert status == 0, err
    assert "vocabulary extended by 2 words" in out
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "full")
    old = load_tokenizer(old_model)
    assert len(pipe.tokenizer) == len(old) + 2 == pipe.model.config.vocab_size
    assert {"zebra", "yak"} <= set(pipe.tokenizer.get_vocab())
    assert pipe.model.lm_head.weight is pipe.model.embed_tokens.weight  # still tied after loading

    # Interrupted after 2 steps and resumed: the same weights as the uninterrupted run, bit for bit.
    status, _, err = run_cli(capsys, *command, "--output-dir", tmp_path / "cut", "--max-steps", "2")
    assert status == 0, err
    status, _, err = run_cli(capsys, *command, "--output-dir", tmp_path / "cut", "--max-steps", "4", "--resume")
    assert status == 0, err
    full, cut = (load_file(tmp_path / run / "checkpoints" / "step_4" / "model.safetensors") for run in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[key], cut[key]) for key in full)
    options = json.loads((tmp_path / "cut" / "run_options.json").read_text())
    assert options["extend_vocabulary"] == 2


def test_extend_vocabulary_needs_init_from(domains, tmp_path, capsys):
    line = cli_error_line(capsys, "train", "--dataset", domains / "new.txt", "--output-dir", tmp_path / "o",
                          "--extend-vocabulary", "5", *TINY)
    assert "--extend-vocabulary 5 goes with --init-from" in line
    assert not (tmp_path / "o").exists()


def test_copy_of_an_extended_model_loads_alone(domains, old_model, tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", "--dataset", domains / "new.txt", "--init-from", old_model,
                             "--extend-vocabulary", "3", *TINY, "--output-dir", tmp_path / "ft", "--max-steps", "2")
    assert status == 0, err
    copy = shutil.copytree(tmp_path / "ft", tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints"))
    assert SentenceMIMPipeline.from_pretrained(copy).reconstruct(["the zebra sat ."])


def test_extend_vocabulary_refuses_a_subword_model_before_reading_data(domains, tmp_path, capsys):
    bpe = ["train", "--dataset", domains / "old.txt", "--max-steps", "1", *TINY, "--tokenizer", "bpe",
           "--vocab-size", "300"]
    status, _, err = run_cli(capsys, *bpe, "--output-dir", tmp_path / "bpe")
    assert status == 0, err
    line = cli_error_line(capsys, "train", "--dataset", tmp_path / "missing.txt", "--output-dir", tmp_path / "o",
                          "--init-from", tmp_path / "bpe", "--extend-vocabulary", "5", *TINY)
    assert f"{tmp_path / 'bpe'}: --extend-vocabulary extends word-level vocabularies" in line
    assert "byte-level BPE never maps text to an unknown token; drop the option" in line
