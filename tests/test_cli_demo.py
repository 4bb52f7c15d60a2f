"""`sentmim demo`, the README's headline command, end to end through the console entry point with a one-step budget:
both models train and are saved, every section prints, and the comparison table shows what `evaluate` measures on
the saved models."""

import contextlib
import io
import json
import math
import re

import pytest

from sentmim.assembly import load_training_splits
from sentmim.batching import make_dataloader
from sentmim.cli import main
from sentmim.evaluation import evaluate
from sentmim.options import DataOptions, DatasetOptions
from sentmim.pipeline import SentenceMIMPipeline
from sentmim.preprocessing import tokenize_dataset

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")  # main() sets the libraries' global bar switches

ROWS = {  # table label -> result key (the IW rows are checked for consistency: recomputing K=50 costs seconds)
    "KL(q(z|x)||p(z)) nats": "kl", "MI whole-split, nats": "mi_whole_split", "active units": "active_units",
    "BLEU-4 corpus (sacreBLEU)": "bleu4_corpus", "BLEU-1 mean sentence": "bleu1_sentence_mean",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["demo", "--output-dir", str(output_dir), "--max-steps", "1", "--seed", "0"])
    return status, printed.getvalue(), output_dir


def table(output: str) -> dict:
    rows = {}
    for line in output.splitlines():
        match = re.match(r"\s{2}(.+?)\s{2,}(-?\d+\.\d{3})\s+(-?\d+\.\d{3})$", line)
        if match:
            rows[match.group(1).strip()] = (float(match.group(2)), float(match.group(3)))
    return rows


def test_demo_trains_saves_and_prints_every_section(demo):
    status, output, output_dir = demo
    assert status == 0
    for objective in ("mim", "vae"):
        assert (output_dir / objective / "model.safetensors").is_file()
        log = [json.loads(line) for line in (output_dir / objective / "log.jsonl").read_text().splitlines()]
        assert [record["step"] for record in log if "train_loss" in record] == [1]
        assert SentenceMIMPipeline.from_pretrained(output_dir / objective).model.config.objective == objective
    for heading in ("== training MIM (1 steps)", "== training VAE (1 steps)", "== reconstructions",
                    "== MIM interpolation", "== VAE interpolation", "== test split, 500 sentences"):
        assert heading in output
    assert output.count("  input: ") == 4
    assert len(re.findall(r"^\s{2}\d: ", output, flags=re.MULTILINE)) == 2 * 8  # steps=6: 8 sentences per model
    assert "MI cap: log N = 6.21" in output


def test_demo_table_shows_what_evaluate_measures(demo):
    _, output, output_dir = demo
    rows = table(output)
    assert set(ROWS) | {"IW-NLL (K=50), nats", "IW-PPL (K=50)"} <= set(rows)
    test_split = load_training_splits(DatasetOptions(dataset="builtin"), DataOptions(), 0)["test"].select(range(500))
    for column, objective in enumerate(("mim", "vae")):
        pipe = SentenceMIMPipeline.from_pretrained(output_dir / objective)
        tokenized, _ = tokenize_dataset(test_split, pipe.tokenizer, max_length=32, overlong="truncate")
        batches = make_dataloader(tokenized, 100, pipe.tokenizer.pad_token_id, shuffle=False)
        # IW-NLL aside, every number uses the same z whether or not IW-NLL is computed (seed + 1)
        expected = evaluate(pipe.model, batches, pipe.tokenizer, iw_samples=0, seed=0, progress=False)
        for label, key in ROWS.items():
            assert rows[label][column] == pytest.approx(expected[key], abs=5e-4), (objective, label)
        iw_nll, iw_ppl = rows["IW-NLL (K=50), nats"][column], rows["IW-PPL (K=50)"][column]
        per_target = 500 / expected["num_targets"]
        assert iw_ppl == pytest.approx(math.exp(iw_nll * per_target), rel=1e-3)
        assert iw_nll <= expected["elbo_nll"] + 1.0  # an importance-weighted bound is close to or below the ELBO
