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
    "KL(q(z|x)||p(z)) nats": "kl", "MI whole-split, nats": "mi_whole_split",
    "active units, relative rule": "active_units_relative", "active units, absolute rule": "active_units",
    "MELBO-NLL (paper's), nats": "melbo_nll", "BLEU-4 corpus (sacreBLEU)": "bleu4_corpus",
    "BLEU-1 mean sentence": "bleu1_sentence_mean", "reconstructions ending with EOS": "reconstruction_eos_share",
}
AE_ROWS = ("active units, absolute rule", "BLEU-4 corpus (sacreBLEU)", "BLEU-1 mean sentence",
           "reconstructions ending with EOS")  # the rest describe q, which an AE never trains: n/a


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["demo", "--output-dir", str(output_dir), "--max-steps", "2", "--mim-warmup-steps", "2",
                       "--seed", "0"])
    return status, printed.getvalue(), output_dir


def table(output: str) -> dict:
    """label -> (sMIM, VAE, AE) cells as floats (None for n/a)."""
    number = r"(-?\d+(?:\.\d{3}(?:e[+-]\d+)?)?|n/a)"
    rows = {}
    for line in output.splitlines():
        match = re.match(rf"\s{{2}}(.+?)\s{{2,}}{number}\s+{number}\s+{number}$", line)
        if match:
            rows[match.group(1).strip()] = tuple(None if cell == "n/a" else float(cell) for cell in match.groups()[1:])
    return rows


def test_demo_trains_saves_and_prints_every_section(demo):
    status, output, output_dir = demo
    assert status == 0
    for objective in ("mim", "vae", "ae"):
        assert (output_dir / objective / "model.safetensors").is_file()
        log = [json.loads(line) for line in (output_dir / objective / "log.jsonl").read_text().splitlines()]
        assert [record["step"] for record in log if "train_loss" in record] == [2]
        assert SentenceMIMPipeline.from_pretrained(output_dir / objective).model.config.objective == objective
        warmup = json.loads((output_dir / objective / "training_args.json").read_text())["mim_warmup_steps"]
        assert warmup == (2 if objective == "mim" else 0)
    # sMIM trains with the warm-up: the prior terms' weight at the second (last) step is 1/2
    log = [json.loads(line) for line in (output_dir / "mim" / "log.jsonl").read_text().splitlines()]
    assert [record["mim_prior_weight"] for record in log if "train_loss" in record] == [0.5]
    for heading in ("== training sMIM + warm-up (2 steps)", "== training VAE, beta = 1 (2 steps)",
                    "== training AE (2 steps)", "== reconstructions", "== sMIM + warm-up interpolation",
                    "== VAE, beta = 1 interpolation", "== samples", "== test split, 500 sentences"):
        assert heading in output
    assert output.count("  input: ") == 4
    assert len(re.findall(r"^\s{2}\d: ", output, flags=re.MULTILINE)) == 2 * 8  # steps=6: 8 sentences per model
    assert "at most log N = 6.21" in output
    lines = output.splitlines()
    for label in table(output):  # every number carries a one-line reading
        row = next(index for index, line in enumerate(lines) if line.strip().startswith(label))
        assert lines[row + 1].startswith("      ") and len(lines[row + 1].split()) > 4, label


def test_demo_table_shows_what_evaluate_measures(demo):
    _, output, output_dir = demo
    rows = table(output)
    iw_rows = ("IW-NLL (K=50, proposal q), nats", "IW-NLL (K=50, widened q), nats", "IW-PPL (K=50, proposal q)")
    assert set(ROWS) | set(iw_rows) | {"samples ending with EOS"} <= set(rows)
    test_split = load_training_splits(DatasetOptions(dataset="builtin"), DataOptions(), 0)["test"].select(range(500))
    for column, objective in enumerate(("mim", "vae", "ae")):
        pipe = SentenceMIMPipeline.from_pretrained(output_dir / objective)
        tokenized, _ = tokenize_dataset(test_split, pipe.tokenizer, max_length=32, overlong="truncate")
        batches = make_dataloader(tokenized, 100, pipe.tokenizer.pad_token_id, shuffle=False)
        # IW-NLL aside, every number uses the same z whether or not IW-NLL is computed (seed + 1)
        expected = evaluate(pipe.model, batches, pipe.tokenizer, iw_samples=0, seed=0, progress=False)
        for label, key in ROWS.items():
            if objective == "ae" and label not in AE_ROWS:
                assert rows[label][column] is None, label
                continue
            assert rows[label][column] == pytest.approx(expected[key], abs=5e-4), (objective, label)
        if objective == "ae":
            assert all(rows[label][column] is None for label in iw_rows)
            continue
        iw_nll, iw_ppl = rows["IW-NLL (K=50, proposal q), nats"][column], rows["IW-PPL (K=50, proposal q)"][column]
        per_target = 500 / expected["num_targets"]
        assert iw_ppl == pytest.approx(math.exp(iw_nll * per_target), rel=1e-3)
        assert iw_nll <= expected["elbo_nll"] + 1.0  # an importance-weighted bound is close to or below the ELBO
        assert rows["IW-NLL (K=50, widened q), nats"][column] <= iw_nll + 1.0  # the width was chosen to be tighter
