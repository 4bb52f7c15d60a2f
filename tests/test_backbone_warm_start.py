"""benchmarks/backbone_warm_start.py end to end with --smoke on a small corpus (seconds): both backbones are made,
sMIM trains from each through the library, and the curves come out of the runs' logs and checkpoints."""

import json
import math

import pytest
from safetensors.torch import load_file

from benchmarks import backbone_warm_start


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sentmim.apps.corpus import builtin_sentences

    root = tmp_path_factory.mktemp("warm-start")
    sentences = builtin_sentences(150, seed=0)
    (root / "data").mkdir()
    (root / "data" / "train.txt").write_text("\n".join(sentences[:120]) + "\n")
    (root / "data" / "valid.txt").write_text("\n".join(sentences[120:]) + "\n")
    argv = ["--smoke", "--dataset", str(root / "data"), "--work-dir", str(root / "work"), "--output",
            str(root / "out")]
    return root, argv, backbone_warm_start.main(argv)


def test_both_runs_have_a_point_per_validation_step_and_the_report_is_written(smoke):
    root, _, results = smoke
    assert set(results["runs"]) == {"pretrained", "random"}
    for run in results["runs"].values():
        assert [point["step"] for point in run["curve"]] == [0, 2, 4]  # step 0, then every --eval-every steps
        for point in run["curve"]:
            assert math.isfinite(point["val_recon_ppl"]) and point["val_recon_ppl"] > 1
            assert 0 <= point["bleu4_corpus"] <= 100 and point["eval_sentences"] > 1
        examples = run["last_step_reconstructions"]
        assert len(examples) == 4 and all(example["input"] and "reconstruction" in example for example in examples)
    written = json.loads((root / "out" / "results.json").read_text())
    assert written["runs"]["random"]["curve"] == results["runs"]["random"]["curve"]
    table = (root / "out" / "table.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["0", "2", "4"]
    assert (root / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_logged_validation_numbers_are_the_curves(smoke):
    root, _, results = smoke
    for label, run in results["runs"].items():
        log = root / "work" / f"smim-{label}" / "log.jsonl"
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        validation = {record["step"]: record["val_recon_ppl"] for record in logged if "val_recon_ppl" in record}
        assert {point["step"]: point["val_recon_ppl"] for point in run["curve"][1:]} == validation


def test_the_two_runs_differ_only_in_the_backbones_initial_weights(smoke):
    root, _, results = smoke
    work = root / "work"
    pretrained, random = (load_file(work / folder / "model.safetensors")
                          for folder in backbone_warm_start.BACKBONES.values())
    assert pretrained.keys() == random.keys()
    assert any(not pretrained[name].equal(random[name]) for name in pretrained)  # pretraining changed the weights
    configs = [json.loads((work / f"smim-{label}" / "config.json").read_text()) for label in ("pretrained", "random")]
    for config in configs:
        config.pop("backbone_name_or_path")
        config["backbone_config"].pop("_name_or_path", None)
    assert configs[0] == configs[1]
    pretraining = results["pretraining"]
    assert pretraining["validation_ppl_pretrained"] < pretraining["validation_ppl_random"]
    # the pretrained backbone starts sMIM with a better reconstruction than its random initial weights
    starts = [results["runs"][label]["curve"][0]["val_recon_ppl"] for label in ("pretrained", "random")]
    assert starts[0] < starts[1]


def test_a_second_run_reuses_every_stage(smoke):
    root, argv, first = smoke
    log = root / "work" / "smim-pretrained" / "log.jsonl"
    before = log.stat().st_mtime_ns
    again = backbone_warm_start.main(argv)
    assert log.stat().st_mtime_ns == before  # nothing trained again
    assert again["runs"]["pretrained"]["curve"] == first["runs"]["pretrained"]["curve"]
