"""`sentmim evaluate` prints, and saves, exactly what the library's `evaluate` computes on the same data with the
same options: every printed metric is checked, so an option the command drops (IW samples, seed, split, batch
size, sentence limit) shows up as a number that differs."""

import json
import re

import pytest
import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel
from sentmim.apps.corpus import builtin_sentences
from sentmim.cli import main
from sentmim.evaluate_folder import load_eval_batches, load_split_texts
from sentmim.evaluation import evaluate
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.reporting import format_results
from sentmim.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

OPTIONS = {"--split": "validation", "--iw-samples": "7", "--batch-size": "16", "--max-sentences": "30", "--seed": "3"}
# printed label (start of the line; the first that matches wins) -> result key
PRINTED = {
    "IW-NLL, widened": "iw_nll_wide", "IW-NLL": "iw_nll",
    "IW-PPL, widened": "iw_ppl_wide", "IW-PPL": "iw_ppl", "ELBO-NLL": "elbo_nll", "ELBO-PPL": "elbo_ppl",
    "MELBO-NLL": "melbo_nll", "MELBO-PPL": "melbo_ppl",
    "Reconstruction -log p(x|z), z = posterior mean": "recon_nll_mean_z",
    "Reconstruction -log p(x|z), one z": "recon_nll_sample_z", "KL(q(z|x)": "kl",
    "of which code energy": "kl_code_energy",
    "of which variance part": "kl_variance_part", "MI whole-split": "mi_whole_split", "MI per batch": "mi_batch",
    "Active units, absolute": "active_units", "Active units, relative": "active_units_relative",
    "BLEU-4 corpus": "bleu4_corpus", "BLEU-1 mean sentence": "bleu1_sentence_mean",
    "Share of reconstructions that end with EOS": "reconstruction_eos_share",
}


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """An untrained VAE with its tokenizer saved as a model folder, and a folder of .txt splits."""
    data_dir = tmp_path_factory.mktemp("data")
    sentences = builtin_sentences(160, seed=2)
    for name, part in (("train", sentences[:80]), ("valid", sentences[80:130]), ("test", sentences[130:])):
        (data_dir / f"{name}.txt").write_text("\n".join(part) + "\n")
    tokenizer = train_tokenizer(sentences[:80], vocab_size=300, model_max_length=32)
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, latent_size=4, objective="vae",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=32,
    ))
    model_dir = tmp_path_factory.mktemp("model")
    SentenceMIMPipeline(model, tokenizer).save_pretrained(model_dir)
    return model_dir, data_dir


def library_results(model_dir, data_dir) -> dict:
    pipe = SentenceMIMPipeline.from_pretrained(model_dir)
    texts = load_split_texts(str(data_dir), split="validation", max_sentences=30)
    loader, stats = load_eval_batches(pipe.tokenizer, texts, batch_size=16, max_length=pipe.max_length,
                                      overlong=pipe.model.config.overlong)  # the length rule training followed
    # scoring validation: the widened proposal's width is chosen on the first 200 train sentences
    heldout = load_split_texts(str(data_dir), split="train", max_sentences=200)
    heldout_loader, _ = load_eval_batches(pipe.tokenizer, heldout, batch_size=64, max_length=pipe.max_length,
                                          overlong=pipe.model.config.overlong)
    return evaluate(pipe.model, loader, pipe.tokenizer, iw_samples=7, seed=3, progress=False,
                    unknown_in_text=stats["num_unknown_in_text"], heldout_batches=heldout_loader,
                    heldout_name=f"the first {len(heldout)} train sentences")


def printed_values(output: str) -> dict:
    values = {}
    for line in output.splitlines():
        for label, key in PRINTED.items():
            if line.strip().startswith(label):
                found = re.search(r"\s(-?\d+\.\d+|\d+|skipped)(\s*/\s*\d+| \+- (\d+\.\d+))?$", line)
                if found is None:  # a line that says why a metric was skipped
                    break
                values[key] = found.group(1)
                if found.group(3):
                    values[f"{key}_se"] = found.group(3)
                break
    return values


def test_every_printed_metric_is_the_librarys_on_the_same_data(model_and_data, capsys):
    model_dir, data_dir = model_and_data
    argv = ["evaluate", str(model_dir), "--dataset", str(data_dir)]
    for flag, value in OPTIONS.items():
        argv += [flag, value]
    assert main(argv) == 0
    output = capsys.readouterr().out
    expected = library_results(model_dir, data_dir)
    assert expected["num_sentences"] == 30 and expected["iw_samples"] == 7 and expected["seed"] == 3

    printed = printed_values(output)
    assert set(printed) == set(PRINTED.values()) | {"mi_whole_split_se"}, sorted(set(PRINTED.values()) - set(printed))
    assert expected["iw_proposal_width_chosen_on"] == "the first 80 train sentences"
    assert "chosen on the first 80 train sentences" in output
    for key, text in printed.items():
        value = expected[key]
        assert text == (str(value) if isinstance(value, int) else f"{value:.3f}"), key
    assert output.rstrip("\n") == format_results(expected)  # the rest of the table: labels, counts, warnings
    lines = output.splitlines()
    for heading in ("Likelihood (NLL in nats per sentence; PPL = exp(sum NLL / sum predicted targets))",
                    "Latent space", "Reconstruction (greedy decoding of the posterior mean)"):
        assert heading in lines

    saved = json.loads((model_dir / "eval_results_validation.json").read_text())
    for key, value in expected.items():
        assert saved[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert saved["split"] == "validation" and saved["num_truncated"] == 0


def test_iw_samples_zero_skips_only_iw_nll(model_and_data, capsys):
    model_dir, data_dir = model_and_data
    assert main(["evaluate", str(model_dir), "--dataset", str(data_dir), "--split", "test", "--iw-samples", "0"]) == 0
    printed = printed_values(capsys.readouterr().out)
    assert printed["iw_nll"] == printed["iw_ppl"] == "skipped"
    assert "iw_nll_wide" not in printed  # nothing to widen: one line says the widened bound was skipped
    assert all(text != "skipped" for key, text in printed.items() if not key.startswith("iw_"))


def test_an_unknown_split_is_one_line_naming_the_available_ones(model_and_data, capsys):
    model_dir, data_dir = model_and_data
    assert main(["evaluate", str(model_dir), "--dataset", str(data_dir), "--split", "dev"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("sentmim evaluate: error: no split 'dev'")
    assert error.endswith("available splits: train, validation, test")
