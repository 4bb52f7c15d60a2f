"""recipes/finetune.py end to end: a tiny word-level model of one domain adapted to a folder of another domain's
paragraphs, scored before and after on that domain's test split."""

import json
import re
import shlex

import pytest

from sentmim.cli import main
from sentmim.evaluate_folder import evaluate_folder
from sentmim.pipeline import SentenceMIMPipeline
from tests.recipe_loader import load_recipe

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

OLD = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "a cat and a dog ran ."] * 6
NEW = [
    "the zebra sat on the mat . a yak ran in the park . the zebra sang .",
    "a quokka and a zebra ran . the yak sat .",
    "the zebra ran in the park . a cat sat on the yak .",
] * 8
TEST = ["the zebra sat . a yak sang in the park .", "a dog and a zebra ran .",
        "the yak and the cat sat . a zebra sang ."]
TINY = ["--embedding_size", "8", "--hidden_size", "8", "--latent_size", "4", "--per_device_train_batch_size", "4",
        "--eval_steps", "2", "--max_length", "16", "--validation_fraction", "0.25"]


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    folder = tmp_path_factory.mktemp("domains")
    (folder / "old.txt").write_text("\n".join(OLD) + "\n")
    (folder / "new").mkdir()
    (folder / "new" / "train.txt").write_text("\n".join(NEW) + "\n")
    (folder / "new" / "test.txt").write_text("\n".join(TEST) + "\n")
    old_model = folder / "old-model"
    assert main(["train", "--dataset", str(folder / "old.txt"), "--output-dir", str(old_model), "--max-steps", "2",
                 "--tokenizer", "word", *[flag.replace("_", "-") for flag in TINY]]) == 0
    return folder, old_model


def test_fine_tunes_and_compares_before_and_after(domains, tmp_path, capsys):
    folder, old_model = domains
    output = tmp_path / "tuned"
    results = load_recipe("finetune").main([
        "--init_from", str(old_model), "--dataset_name", str(folder / "new"), "--split_sentences",
        "--extend_vocabulary", "3", "--output_dir", str(output), "--max_steps", "2", "--iw_samples", "2",
        "--disable_tqdm", *TINY])
    printed = capsys.readouterr().out

    assert json.loads((output / "finetune_results.json").read_text()) == json.loads(json.dumps(results))
    # "before" is the model it started from, "after" the fine-tuned one, each scored as `sentmim evaluate` does.
    for name, folder_scored in (("before", old_model), ("after", output)):
        expected = evaluate_folder(folder_scored, folder / "new", split="test", batch_size=128, iw_samples=2,
                                   progress=False, split_sentences=True)
        assert {key: results[name][key] for key in ("iw_nll", "bleu4_corpus", "unknown_token_rate", "kl")} == {
            key: expected[key] for key in ("iw_nll", "bleu4_corpus", "unknown_token_rate", "kl")}
    assert results["before"]["num_sentences"] == results["after"]["num_sentences"] == 5  # the test rows' sentences
    assert results["after"]["unknown_token_rate"] < results["before"]["unknown_token_rate"]  # zebra, yak, ... added
    assert len(SentenceMIMPipeline.from_pretrained(output).tokenizer) == len(
        SentenceMIMPipeline.from_pretrained(old_model).tokenizer) + 3
    assert "before" in printed and "after" in printed and "unknown tokens, % of the scored tokens" in printed
    assert f"{results['before']['unknown_token_rate']:.2%}" in printed


def test_needs_a_model_to_start_from(domains, tmp_path):
    folder, _ = domains
    with pytest.raises(ValueError, match="--init_from"):
        load_recipe("finetune").main(["--dataset_name", str(folder / "new"), "--output_dir", str(tmp_path / "o")])


def test_docstring_commands_use_real_flags():
    recipe = load_recipe("finetune")
    known = set(re.findall(r"--[\w-]+", recipe.HfArgumentParser(recipe.OPTIONS).format_help()))
    used = set(re.findall(r"--\w+", recipe.__doc__)) - {"--multi_gpu", "--num_processes"}
    assert len(used) > 10 and used <= known, sorted(used - known)
    command = re.search(r"python recipes/finetune\.py (--init_from.*?)\n\n", recipe.__doc__, re.DOTALL).group(1)
    command = command.replace("\\\n", " ")
    dataset, data, tokenizer, model, _, test = recipe.parse_args(shlex.split(command))
    parsed = (model.init_from, dataset.split_sentences, data.lowercase, tokenizer.extend_vocabulary, test.test_split)
    assert parsed == ("runs/ptb-mim", True, True, 5000, "test")
