"""The evaluation recipes and `evaluate_folder`, end to end on a tiny saved model and a small .txt split."""

import json
from pathlib import Path

import pytest
import sacrebleu
import torch

from sentmim import SentenceMIMModel, metrics
from sentmim.data import DataError
from sentmim.evaluate_folder import evaluate_folder
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.tokenization import train_tokenizer
from tests.recipe_loader import load_recipe

TEST_SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran in the park .",
    "the bird sang .",
    "prices rose sharply in tokyo .",
    "the company said it expects a loss .",
    "we saw a <unk> in the park .",
    "a cat and a dog .",
    "it rained and it rained and the cat and the dog sat in the park .",  # 17 tokens: truncated to 12
]


@pytest.fixture
def model_dir(tmp_path, tiny_config):
    """A tiny untrained model and its tokenizer, saved together the way training saves them; its training truncated
    sentences longer than 12 tokens (config.overlong), so evaluation truncates them too."""
    tokenizer = train_tokenizer(TEST_SENTENCES, kind="word", model_max_length=12)
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config(vocab_size=len(tokenizer), latent_size=6, overlong="truncate"))
    path = tmp_path / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "test.txt").write_text("\n".join(TEST_SENTENCES) + "\n\n")  # a blank line, dropped by cleaning
    return path


def common_flags(model_dir, data_dir):
    return ["--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--split", "test",
            "--per_device_eval_batch_size", "3", "--device", "cpu", "--disable_tqdm"]


def test_perplexity_recipe_prints_labelled_table_and_writes_json(model_dir, data_dir, tmp_path, capsys):
    output = tmp_path / "ppl.json"
    flags = common_flags(model_dir, data_dir) + ["--iw_samples", "4", "--seed", "1", "--output_file", str(output)]
    returned = load_recipe("perplexity").main(flags)
    printed = capsys.readouterr().out

    saved = json.loads(output.read_text())
    assert saved == returned
    for key in ("iw_nll", "iw_ppl", "elbo_nll", "elbo_ppl", "melbo_nll", "melbo_ppl", "kl", "mi_whole_split",
                "mi_batch", "active_units", "num_targets", "collapsed"):
        assert saved[key] is not None, key
    assert saved["iw_samples"] == 4 and saved["num_sentences"] == len(TEST_SENTENCES)
    assert saved["num_truncated"] == 1 and saved["max_length"] == 12
    assert saved["num_targets"] == sum(min(len(s.split()) + 1, 11) for s in TEST_SENTENCES)
    assert "IW-NLL (K=4, proposal q(z|x)" in printed and "not a likelihood" in printed.lower()
    assert "1 sentences longer than 12 tokens were truncated, as in training" in printed


def test_perplexity_recipe_max_sentences_and_default_output(model_dir, data_dir):
    results = load_recipe("perplexity").main(
        common_flags(model_dir, data_dir) + ["--iw_samples", "0", "--max_sentences", "5"]
    )
    assert results["num_sentences"] == 5 and results["iw_nll"] is None
    assert json.loads((model_dir / "perplexity_test.json").read_text())["num_sentences"] == 5


def test_reconstruction_bleu_recipe(model_dir, data_dir, tmp_path, capsys):
    hypotheses_file = tmp_path / "out" / "recon.hyp.txt"
    flags = common_flags(model_dir, data_dir) + ["--hypotheses_file", str(hypotheses_file), "--num_examples", "2"]
    results = load_recipe("reconstruction_bleu").main(flags)
    printed = capsys.readouterr().out

    hypotheses = hypotheses_file.read_text().splitlines()
    references = Path(results["references_file"]).read_text().splitlines()
    # Files are in the split's order: line i is the reconstruction of sentence i (checked through the pipeline).
    pipe = SentenceMIMPipeline.from_pretrained(model_dir)
    assert references[:-1] == TEST_SENTENCES[:-1]  # "<unk>" kept; the last one is truncated to 10 words
    # An unknown token of a reconstruction is written as a mark no reference holds: it can match nothing.
    assert hypotheses == metrics.hide_unknown(pipe.reconstruct(TEST_SENTENCES), references, "<unk>")
    assert any("\u2047" in hypothesis for hypothesis in hypotheses)
    assert references[-1] == " ".join(TEST_SENTENCES[-1].split()[:10])
    assert results["bleu4_corpus"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references], tokenize="none").score, abs=1e-9
    )
    assert json.loads((model_dir / "reconstruction_test.json").read_text()) == results
    for label in ("BLEU-4 corpus (sacreBLEU", "tok:none", "BLEU-1 mean sentence (0-1; sentenceMIM demo)"):
        assert label in printed
    assert printed.count("reconstruction: ") == 2


def test_reconstruction_bleu_recipe_sample_mode_depends_on_seed(model_dir, data_dir, tmp_path):
    recipe = load_recipe("reconstruction_bleu")

    def run(seed, name):
        flags = common_flags(model_dir, data_dir) + ["--mode", "sample", "--seed", str(seed),
                                                     "--hypotheses_file", str(tmp_path / name)]
        recipe.main(flags)
        return (tmp_path / name).read_text()

    assert run(0, "a.txt") == run(0, "b.txt")
    assert run(0, "a.txt") != run(5, "c.txt")


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolate_recipe_prints_steps_plus_two_with_reconstructed_endpoints(model_dir, tmp_path, method, capsys):
    output = tmp_path / "interpolation.txt"
    first, second = "the cat sat on the mat .", "prices rose sharply in tokyo ."
    flags = ["--model_name_or_path", str(model_dir), "--first", first, "--second", second, "--steps", "3",
             "--method", method, "--output_file", str(output), "--device", "cpu"]
    sentences = load_recipe("interpolate").main(flags)
    printed = capsys.readouterr().out

    lines = output.read_text().splitlines()
    assert lines == sentences and len(lines) == 3 + 2
    assert [lines[0], lines[-1]] == SentenceMIMPipeline.from_pretrained(model_dir).reconstruct([first, second])
    assert all(sentence in printed for sentence in sentences)
    assert "0.00" in printed and "1.00" in printed


def test_interpolate_recipe_takes_sentences_from_a_split(model_dir, data_dir):
    flags = ["--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--split", "test",
             "--first_index", "2", "--second_index", "6", "--steps", "1", "--device", "cpu"]
    sentences = load_recipe("interpolate").main(flags)
    expected = SentenceMIMPipeline.from_pretrained(model_dir).reconstruct([TEST_SENTENCES[2], TEST_SENTENCES[6]])
    assert len(sentences) == 3 and [sentences[0], sentences[-1]] == expected
    with pytest.raises(ValueError, match="give both --first and --second"):
        load_recipe("interpolate").main(["--model_name_or_path", str(model_dir), "--first", "only one"])


def test_evaluate_folder_writes_results_next_to_the_model_and_plots(model_dir, data_dir, tmp_path):
    plots_dir = tmp_path / "plots"
    results = evaluate_folder(model_dir, data_dir, split="test", batch_size=3, iw_samples=3, plots_dir=plots_dir,
                              progress=False)
    assert json.loads((model_dir / "eval_results_test.json").read_text()) == results
    assert results["num_sentences"] == len(TEST_SENTENCES) and results["num_truncated"] == 1
    assert results["bleu4_corpus"] is not None and "tok:none" in results["bleu_signature"]
    assert sorted(p.name for p in plots_dir.iterdir()) == [
        "kl_per_dimension.png", "latent_projection.png", "log_likelihood_histogram.png"
    ]
    sliced = evaluate_folder(model_dir, data_dir, split="test[:4]", iw_samples=0, progress=False)
    assert sliced["num_sentences"] == 4 and (model_dir / "eval_results_test_4.json").is_file()


def test_evaluate_folder_without_progress_draws_no_bar(model_dir, data_dir, capfd):
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.enable_progress_bars()  # as a program that never configured sentmim's console has them (an earlier
    transformers_logging.enable_progress_bar()  # test may have switched them off)
    capfd.readouterr()
    evaluate_folder(model_dir, data_dir, split="test[:5]", batch_size=3, iw_samples=0, progress=False)
    assert capfd.readouterr().err == ""  # neither our bars nor those of datasets (map) and transformers (loading)
    assert not datasets.are_progress_bars_disabled()  # and the global switches are left as they were
    assert transformers_logging.is_progress_bar_enabled()


def test_evaluate_folder_errors_name_the_problem(model_dir, data_dir, tmp_path):
    with pytest.raises(DataError, match="no split 'validation'.*available splits: test"):
        evaluate_folder(model_dir, data_dir, split="validation", progress=False)
    bare = tmp_path / "bare"
    SentenceMIMModel.from_pretrained(model_dir).save_pretrained(bare)  # weights but no tokenizer
    with pytest.raises(ValueError, match="no tokenizer"):
        evaluate_folder(bare, data_dir, progress=False)


@pytest.mark.parametrize("recipe", ["perplexity", "reconstruction_bleu"])
def test_evaluation_recipes_split_rows_into_sentences(recipe, model_dir, tmp_path):
    """--split_sentences reaches the data: two rows of four and four sentences are scored as eight sentences."""
    folder = tmp_path / "paragraphs"
    folder.mkdir()
    (folder / "test.txt").write_text(" ".join(TEST_SENTENCES[:4]) + "\n" + " ".join(TEST_SENTENCES[4:]) + "\n")
    flags = common_flags(model_dir, folder) + (["--iw_samples", "0"] if recipe == "perplexity" else [])
    assert load_recipe(recipe).main(flags)["num_sentences"] == 2
    assert load_recipe(recipe).main(flags + ["--split_sentences"])["num_sentences"] == len(TEST_SENTENCES)
