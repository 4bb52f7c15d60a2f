"""--backbone and its options through the entry points: the options (defined once in sentmim.options), assembly
(data -> the backbone's adapted tokenizer -> from_backbone -> training), fine-tuning with --init-from, exact resume
(LoRA included), the published model and the `sentmim` commands on it, and the backbone's decoded text (what BLEU
reads). Tiny random backbones are built here (tests/backbone_helpers.py); no network."""

import inspect
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from sentmim import SentenceMIMModel, SentenceMIMPipeline
from sentmim.assembly import build_model, build_tokenizer, train_from_options
from sentmim.backbones import load_backbone_tokenizer
from sentmim.console import configure_console
from sentmim.evaluation import reconstruct_batch
from sentmim.lora import add_lora, is_lora_model, load_lora, merged_copy
from sentmim.options import DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from sentmim.tokenization import decode_keep_unknown, load_tokenizer
from tests.backbone_helpers import FAMILIES, SENTENCES, save_backbone
from tests.conftest import cli_error_line, run_cli
from tests.test_training import interrupt_after_checkpoint

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")
SMALL = dict(latent_size=4, num_memory_slots=2)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    return {family: save_backbone(family, tmp_path_factory.mktemp(family)) for family in ("gpt2", "t5")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """train / valid / test .txt files of the helpers' sentences."""
    folder = tmp_path_factory.mktemp("data")
    for name, lines in (("train", SENTENCES), ("valid", SENTENCES[:4]), ("test", SENTENCES[4:8])):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def train_only_dir(tmp_path_factory):
    """No validation split: the run publishes its last model, so it can be compared with the model in memory."""
    folder = tmp_path_factory.mktemp("train-only")
    (folder / "train.txt").write_text("\n".join(SENTENCES) + "\n")
    return folder


def train_run(data, output_dir, model: dict, data_options: dict | None = None, **training):
    settings = dict(batch_size=4, eval_steps=2, logging_steps=1, max_steps=4, learning_rate=1e-2, disable_tqdm=True)
    return train_from_options(
        DatasetOptions(dataset=str(data)), DataOptions(**{"max_length": 30, **(data_options or {})}),
        TokenizerOptions(), ModelOptions(**model),
        TrainingOptions(output_dir=str(output_dir), **{**settings, **training}),
    )


def same_as_pretrained(backbone, pretrained) -> bool:
    """Every tensor of the backbone equals the pretrained one (an embedding with added rows: its first rows)."""
    mine = backbone.state_dict()
    for name, value in pretrained.state_dict().items():
        rows = mine[name][: value.size(0)] if mine[name].shape != value.shape else mine[name]
        if not torch.equal(rows, value):
            return False
    return True


# -- a new run ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_a_new_run_starts_from_the_backbones_weights_and_tokenizer(backbones, data_dir, family, tmp_path):
    """Frozen, the published backbone is the pretrained one tensor for tensor: the run loaded its weights (not a
    random model of its config), trained no tokenizer, and freeze_backbone reached the model."""
    folder = backbones[family]
    train_run(data_dir, tmp_path, dict(backbone=folder, freeze_backbone=True, **SMALL))
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    config = pipe.model.config
    assert (config.architecture, config.freeze_backbone, config.backbone_name_or_path) == ("backbone", True, folder)
    assert config.max_position_embeddings == 30  # --max-length: what the model takes, as for a GRU
    auto = AutoModelForSeq2SeqLM if family == "t5" else AutoModelForCausalLM
    assert same_as_pretrained(pipe.model.backbone, auto.from_pretrained(folder))
    assert pipe.tokenizer.get_vocab() == load_backbone_tokenizer(folder).get_vocab()
    assert load_tokenizer(tmp_path / "checkpoints" / "run").get_vocab() == pipe.tokenizer.get_vocab()


def test_backbone_options_reach_the_model(backbones):
    options = ModelOptions(backbone=backbones["gpt2"], backbone_pooling="last", num_memory_slots=3, objective="vae",
                           latent_size=5, word_dropout=0.1)
    tokenizer = build_tokenizer(DataOptions(), TokenizerOptions(), options, SENTENCES, None, resume=False)
    model = build_model(DataOptions(max_length=20, overlong="truncate"), options, tokenizer, None, resume=False)
    config = model.config
    assert config.overlong == "truncate"  # evaluation treats long sentences as this run's training does
    assert (config.backbone_pooling, config.num_memory_slots, config.objective) == ("last", 3, "vae")
    assert (config.latent_size, config.word_dropout, config.max_position_embeddings) == (5, 0.1, 20)
    assert model.latent.latent_to_memory.out_features == 3 * 16 and model.latent.pooling == "last"
    assert not is_lora_model(model)
    lora = build_model(DataOptions(max_length=20), ModelOptions(backbone=backbones["gpt2"], lora_r=3, lora_alpha=6,
                                                   lora_target_modules=["c_attn"]), tokenizer, None, resume=False)
    settings = lora.peft_config["default"]
    assert is_lora_model(lora) and (settings.r, settings.lora_alpha, settings.lora_dropout) == (3, 6, 0.0)
    assert "c_attn" in settings.target_modules


def test_every_backbone_flag_reaches_the_model_options(monkeypatch):
    import sentmim.apps.benchmark  # imported now, it binds the real train_from_options, not the stand-in
    import sentmim.assembly
    from sentmim.cli import main

    calls = []
    monkeypatch.setattr(sentmim.assembly, "train_from_options",
                        lambda *options: calls.append(options) or (None, None, {"step": 0, "best_val_loss": None}))
    flags = ["--backbone", "org/name", "--freeze-backbone", "--backbone-pooling", "last", "--num-memory-slots", "3",
             "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--lora-target-modules", "q", "v"]
    assert main(["train", "--output-dir", "x", *flags]) == 0
    assert main(["train", "--output_dir", "x", "--backbone", "b", "--freeze_backbone", "false", "--lora_r", "2"]) == 0
    assert calls[0][3] == ModelOptions(backbone="org/name", freeze_backbone=True, backbone_pooling="last",
                                       num_memory_slots=3, lora_r=4, lora_alpha=8, lora_dropout=0.1,
                                       lora_target_modules=["q", "v"])
    assert calls[1][3] == ModelOptions(backbone="b", freeze_backbone=False, lora_r=2)
    assert ModelOptions().lora_settings() is None
    assert ModelOptions(backbone="b", lora_r=2).lora_settings() == dict(r=2, alpha=16, dropout=0.0,
                                                                        target_modules=None)
    assert ModelOptions(backbone="b", lora_r=2, lora_alpha=4, lora_dropout=0.1).lora_settings() == dict(
        r=2, alpha=4, dropout=0.1, target_modules=None)
    defaults = inspect.signature(add_lora).parameters  # the CLI's defaults are add_lora's own
    assert ModelOptions(backbone="b", lora_r=2).lora_settings() == dict(
        r=2, alpha=defaults["alpha"].default, dropout=defaults["dropout"].default, target_modules=None)


def test_lowercase_reaches_the_backbones_tokenizer(backbones, tmp_path):
    options = ModelOptions(backbone=backbones["gpt2"])
    tokenizer = build_tokenizer(DataOptions(lowercase=True), TokenizerOptions(), options, SENTENCES, None, False)
    assert tokenizer("The CAT sat .")["input_ids"] == tokenizer("the cat sat .")["input_ids"]
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path)("The CAT")["input_ids"] == tokenizer("the cat")["input_ids"]
    cased = build_tokenizer(DataOptions(), TokenizerOptions(), options, SENTENCES, None, False)
    assert cased("The CAT sat .")["input_ids"] != cased("the cat sat .")["input_ids"]


@pytest.mark.parametrize(("options", "message"), [
    (dict(backbone="b", hidden_size=8), "--hidden-size with --backbone: the backbone sets"),
    (dict(backbone="b", architecture="gru"), "--architecture with --backbone"),
    (dict(backbone="b", dropout=0.1), "--dropout with --backbone"),
    (dict(backbone="b", init_from="m"), "--backbone and --init-from exclude each other"),
    (dict(freeze_backbone=True), "--freeze-backbone needs a pretrained backbone"),
    (dict(backbone_pooling="mean"), "--backbone-pooling needs a pretrained backbone"),
    (dict(lora_r=4), "--lora-r needs a pretrained backbone"),
    (dict(backbone="b", lora_alpha=8), "--lora-alpha without --lora-r"),
    (dict(backbone="b", lora_r=0), "lora_r=0 is invalid: must be an integer >= 1"),
    (dict(backbone="b", lora_r=2, lora_dropout=1.0), "lora_dropout=1.0 is invalid"),
    (dict(num_memory_slots=0), "num_memory_slots=0 is invalid"),
])
def test_option_combinations_that_cannot_work_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ModelOptions(**options)


def test_the_command_line_refuses_in_one_line(backbones, data_dir, tmp_path, capsys):
    common = ["train", "--dataset", data_dir, "--output-dir", tmp_path / "run", "--max-steps", "1"]
    line = cli_error_line(capsys, *common, "--backbone", backbones["gpt2"], "--hidden-size", "8")
    assert "--hidden-size with --backbone" in line
    line = cli_error_line(capsys, *common, "--backbone", tmp_path / "missing")
    assert "missing': no such folder" in line
    line = cli_error_line(capsys, *common, "--backbone", backbones["gpt2"], "--max-length", "60")
    assert "max_position_embeddings=60" in line and "at most 36 tokens" in line  # 40 positions less 4 slots
    line = cli_error_line(capsys, *common, "--backbone", backbones["gpt2"], "--max-length", "30", "--lora-r", "2",
                          "--lora-target-modules", "nothing_here")
    assert "nothing_here" in line


# -- the published model and the commands on it ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(backbones, data_dir, tmp_path_factory):
    """sentmim train --backbone (GPT-2: a tied output layer) through the CLI."""
    from sentmim.cli import main

    output_dir = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--dataset", str(data_dir), "--output-dir", str(output_dir), "--backbone", backbones["gpt2"],
            "--latent-size", "4", "--num-memory-slots", "2", "--max-length", "30", "--max-steps", "3",
            "--eval-steps", "2", "--batch-size", "4"]
    assert main(argv) == 0
    return output_dir


def test_every_command_works_on_a_backbone_model(cli_run, data_dir, capsys):
    status, out, err = run_cli(capsys, "evaluate", cli_run, "--dataset", data_dir, "--iw-samples", "2",
                               "--output", cli_run.parent / "scores.json")
    assert status == 0, err
    scores = json.loads((cli_run.parent / "scores.json").read_text())
    assert scores["num_sentences"] == 4 and scores["bleu4_corpus"] is not None and scores["iw_nll"] > 0
    for command, lines in ((["reconstruct", cli_run, SENTENCES[0]], 2),
                           (["sample", cli_run, "-n", "2", "--seed", "0"], 2),  # seeded: a random model's bytes
                           (["interpolate", cli_run, SENTENCES[0], SENTENCES[1], "--steps", "1"], 3),
                           (["encode", cli_run, SENTENCES[0], "--output", cli_run.parent / "z.npy"], 1)):
        status, out, err = run_cli(capsys, *command)
        # (split on newlines only: sampled bytes of a random byte-level model may be control characters)
        assert status == 0 and out.strip("\n").count("\n") == lines - 1, (command, out, err)
    assert np.load(cli_run.parent / "z.npy").shape == (1, 4)


def test_the_console_hides_accelerates_note_on_tied_weights(backbones, data_dir, tmp_path, caplog):
    """accelerate notes at every checkpoint that it saved GPT-2's tied output layer once; resume ties it back
    (test_resumed_backbone_run_equals_the_uninterrupted_one), so the console filters the note, and only it."""
    configure_console()
    with caplog.at_level(logging.WARNING):
        train_run(data_dir, tmp_path, dict(backbone=backbones["gpt2"], **SMALL), max_steps=1)
    assert "Removed shared tensor" not in caplog.text
    logger = logging.getLogger("accelerate.utils.other")
    record = logging.LogRecord(logger.name, logging.WARNING, "", 0, "something else", (), None)
    assert logger.filter(record)
    configure_console(debug=True)
    record.msg = "[RANK 0] Removed shared tensor {'x'} while saving. This should be OK"
    assert logger.filter(record)
    configure_console()
    assert not logger.filter(record)


# -- decoded text (what reconstruction BLEU compares) ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_a_backbone_tokenizer_decodes_to_the_original_text(family, tmp_path):
    """The adapted tokenizer's ids decode back to the sentence itself (byte-level BPE and Metaspace decoders are
    lossless): references and reconstructions are detokenized text, not space-joined subword pieces."""
    tokenizer = load_backbone_tokenizer(save_backbone(family, tmp_path))
    byte_level = family in ("bart", "gpt2", "qwen2")  # the others' tiny vocabularies lack capitals and commas
    sentences = SENTENCES[:5] + (["Mixed Case, and punctuation!"] if byte_level else [])
    ids = tokenizer(sentences, padding=True, return_tensors="pt")["input_ids"]
    assert [text.strip() for text in decode_keep_unknown(tokenizer, ids)] == sentences

    class Echo(torch.nn.Module):  # decodes z as the batch's own ids: isolates the text side of reconstruct_batch
        def decode(self, z, max_length):
            return ids[:, 1:]

    hypotheses, references = reconstruct_batch(Echo(), tokenizer, ids, None, max_decode_length=40)
    assert hypotheses == references == sentences


# -- fine-tuning and resume ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_backbone_run(backbones, data_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("base") / "run"
    train_run(data_dir, output_dir, dict(backbone=backbones["t5"], **SMALL))
    return output_dir


def test_fine_tuning_a_backbone_model_keeps_its_architecture(trained_backbone_run, data_dir, tmp_path):
    base = SentenceMIMPipeline.from_pretrained(trained_backbone_run).model
    model, _, _ = train_run(data_dir, tmp_path / "vae", dict(init_from=str(trained_backbone_run), objective="vae",
                                                             freeze_backbone=True), max_steps=2)
    assert model.config.objective == "vae" and model.config.freeze_backbone
    assert all(torch.equal(value, base.backbone.state_dict()[name])
               for name, value in model.backbone.state_dict().items())  # frozen: the trained backbone, unchanged
    for options, message in ((dict(backbone_pooling="weighted_mean"), "was trained with backbone_pooling=mean"),
                             (dict(num_memory_slots=3), "was trained with num_memory_slots=2")):
        with pytest.raises(ValueError, match=message):
            train_run(data_dir, tmp_path / "refused", dict(init_from=str(trained_backbone_run), **options))
    lora, _, _ = train_run(data_dir, tmp_path / "lora", dict(init_from=str(trained_backbone_run), lora_r=2),
                           max_steps=2)
    assert is_lora_model(lora)


def test_lora_needs_a_backbone_model_to_fine_tune(tiny_config, data_dir, tmp_path):
    gru = tmp_path / "gru"
    model = SentenceMIMModel(tiny_config())
    model.save_pretrained(gru)
    with pytest.raises(ValueError, match="--lora-r: .* has no pretrained backbone"):
        build_model(DataOptions(), ModelOptions(init_from=str(gru), lora_r=2), None, None, resume=False)
    with pytest.raises(ValueError, match="--freeze-backbone: .* has no pretrained backbone"):
        build_model(DataOptions(), ModelOptions(init_from=str(gru), freeze_backbone=True), None, None, resume=False)


def final_weights(output_dir) -> dict:
    latest = (output_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(output_dir / "checkpoints" / latest / "model.safetensors")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resumed_backbone_run_equals_the_uninterrupted_one(backbones, data_dir, lora, tmp_path, monkeypatch):
    """Resume rebuilds from checkpoints/run alone: a LoRA run's adapters from its adapter_config.json, so the resumed
    command may leave the LoRA options out. The weights, and the published model, end bitwise the same."""
    model = dict(backbone=backbones["gpt2"], **SMALL, **(dict(lora_r=2, lora_alpha=4) if lora else {}))
    reference, _, _ = train_run(data_dir, tmp_path / "reference", model, max_steps=5, save_steps=1)

    interrupt_after_checkpoint(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_run(data_dir, tmp_path / "resumed", model, max_steps=5, save_steps=1)
    monkeypatch.undo()
    assert (tmp_path / "resumed" / "checkpoints" / "run" / "adapter_config.json").is_file() == lora
    torch.manual_seed(1234)  # the random state must come from the checkpoint
    given = {name: value for name, value in model.items() if not name.startswith("lora_")}
    resumed, _, _ = train_run(data_dir, tmp_path / "resumed", given, max_steps=5, save_steps=1, resume=True)

    assert is_lora_model(resumed) == lora
    expected = final_weights(tmp_path / "reference")
    assert expected.keys() == final_weights(tmp_path / "resumed").keys()
    for name, value in final_weights(tmp_path / "resumed").items():
        assert torch.equal(value, expected[name]), name
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    published = [load_file(tmp_path / run / "model.safetensors") for run in ("reference", "resumed")]
    assert all(torch.equal(value, published[0][name]) for name, value in published[1].items())


@pytest.mark.parametrize(("change", "message"), [
    (dict(lora_r=4), "option lora_r was 2 when this run started"),
    (dict(lora_target_modules=["c_proj"]), "option lora_target_modules was None"),
    (dict(backbone_pooling="mean"), "model option backbone_pooling was 'weighted_mean'"),
    (dict(num_memory_slots=3), "model option num_memory_slots was 2"),
    (dict(freeze_backbone=True), "model option freeze_backbone was False"),
])
def test_resume_refuses_another_backbone_setting(backbones, data_dir, change, message, tmp_path, monkeypatch):
    model = dict(backbone=backbones["gpt2"], lora_r=2, **SMALL)
    interrupt_after_checkpoint(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(data_dir, tmp_path, model, max_steps=3, save_steps=1)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=message):
        train_run(data_dir, tmp_path, {**model, **change}, max_steps=3, save_steps=1, resume=True)


def test_resume_refuses_another_backbone(backbones, data_dir, tmp_path, monkeypatch):
    interrupt_after_checkpoint(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_run(data_dir, tmp_path, dict(backbone=backbones["gpt2"], **SMALL), max_steps=3, save_steps=1)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="option backbone was .*gpt2.* now .*t5"):
        train_run(data_dir, tmp_path, dict(backbone=backbones["t5"], **SMALL), max_steps=3, resume=True)


# -- LoRA: what the run publishes ------------------------------------------------------------------------------------


def test_a_lora_run_publishes_the_merged_model_and_its_adapters(backbones, train_only_dir, tmp_path):
    """The folder is a plain sentmim model (SentenceMIMPipeline loads it) equal to the trained LoRA model, and
    adapter/ holds the adapters alone, which load back onto the backbone bitwise."""
    folder = backbones["gpt2"]
    lora, tokenizer, _ = train_run(train_only_dir, tmp_path, dict(backbone=folder, lora_r=2, **SMALL),
                                   data_options=dict(validation_fraction=0.0))
    lora.eval()
    encoded = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    expected = lora.log_likelihood(encoded["input_ids"], z, encoded["attention_mask"])

    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    assert not any(".lora_" in name for name in pipe.model.state_dict())
    torch.testing.assert_close(pipe.model.log_likelihood(encoded["input_ids"], z, encoded["attention_mask"]),
                               expected, rtol=1e-5, atol=1e-4)
    adapters = load_lora(SentenceMIMModel.from_backbone(folder, **SMALL), tmp_path / "adapter").eval()
    assert torch.equal(adapters.log_likelihood(encoded["input_ids"], z, encoded["attention_mask"]), expected)
    assert "adapter" in json.loads((tmp_path / ".sentmim-files").read_text())  # --overwrite knows it as the run's


def test_merged_copy_leaves_the_training_model_as_it_is(backbones):
    from sentmim.lora import add_lora

    lora = add_lora(SentenceMIMModel.from_backbone(backbones["gpt2"], **SMALL), r=2)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if ".lora_B." in name:
                parameter.normal_()  # B starts at 0: make the adapters change something
    before = {name: value.clone() for name, value in lora.state_dict().items()}
    merged = merged_copy(lora)
    assert all(torch.equal(value, before[name]) for name, value in lora.state_dict().items())
    assert type(merged) is SentenceMIMModel and is_lora_model(lora)
    ids = torch.tensor([[4, 10, 11, 12, 0]])
    z = torch.randn(1, 4)
    torch.testing.assert_close(merged.eval().log_likelihood(ids, z), lora.eval().log_likelihood(ids, z),
                               rtol=1e-5, atol=1e-4)


# -- the Hub ---------------------------------------------------------------------------------------------------------


def put_in_hub_cache(folder, repo_id: str) -> None:
    """Lay a backbone folder out as huggingface_hub caches a downloaded repository (refs/main -> a snapshot), so
    that transformers resolves the id offline, through the same code that would download it."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_id_loads_through_from_pretrained(backbones, data_dir, tmp_path):
    """`--backbone org/name` goes to transformers' from_pretrained with the id (here answered from the Hub cache,
    offline: tests have no network); an id that is not there gives one line naming it."""
    put_in_hub_cache(backbones["gpt2"], "sentmim-test/tiny-gpt2")
    train_run(data_dir, tmp_path / "run", dict(backbone="sentmim-test/tiny-gpt2", freeze_backbone=True, **SMALL),
              max_steps=1)
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "run")
    assert pipe.model.config.backbone_name_or_path == "sentmim-test/tiny-gpt2"
    assert same_as_pretrained(pipe.model.backbone, AutoModelForCausalLM.from_pretrained(backbones["gpt2"]))
    with pytest.raises(OSError, match="backbone 'sentmim-test/absent': neither a local folder .* nor a model"):
        train_run(data_dir, tmp_path / "absent", dict(backbone="sentmim-test/absent", **SMALL))


# -- the benchmark and the recipe ------------------------------------------------------------------------------------


def test_benchmark_settings_with_a_backbone_leave_the_presets_sizes_out(backbones):
    from sentmim.apps.benchmark_settings import benchmark_settings

    settings = benchmark_settings("cpu", backbone=backbones["gpt2"], lora_r=2)
    model = settings.model
    assert (model.backbone, model.lora_r) == (backbones["gpt2"], 2)
    assert (model.embedding_size, model.hidden_size, model.tie_word_embeddings) == (None, None, None)
    assert benchmark_settings("cpu").model.hidden_size == 256  # without a backbone the preset's sizes stay
    with pytest.raises(ValueError, match="--hidden-size with --backbone"):  # a size asked for is not dropped
        benchmark_settings("cpu", backbone=backbones["gpt2"], hidden_size=64)


def test_sentmim_benchmark_trains_every_model_from_the_backbone(backbones, tmp_path, capsys):
    status, out, err = run_cli(
        capsys, "benchmark", "--preset", "smoke", "--output-dir", tmp_path, "--backbone", backbones["gpt2"],
        "--objectives", "mim", "ae", "--latent-sizes", "4", "--max-steps", "2", "--eval-steps", "2",
        "--max-length", "36", "--overlong", "truncate", "--iw-samples", "2", "--num-examples", "1",
        "--interpolation-steps", "1", "--disable-tqdm")
    assert status == 0, err
    assert "| sMIM | 4 |" in out and "| AE | 4 |" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["model"]["backbone"] == backbones["gpt2"]
    assert f"--backbone {backbones['gpt2']}" in saved["command"] and "None" not in saved["command"]
    report = (tmp_path / "results.md").read_text()
    assert f"the pretrained backbone `{backbones['gpt2']}` (fine-tuned in full)" in report
    for model in saved["models"]:
        config = json.loads((tmp_path / model["model_dir"] / "config.json").read_text())
        assert config["architecture"] == "backbone" and config["backbone_name_or_path"] == backbones["gpt2"]
        assert model["metrics"]["bleu4_corpus"] is not None
    tokenizer = load_tokenizer(tmp_path / saved["models"][0]["model_dir"])
    assert tokenizer.get_vocab() == load_backbone_tokenizer(backbones["gpt2"]).get_vocab()


def test_recipe_train_takes_the_backbone_options(backbones, data_dir, tmp_path):
    from tests.recipe_loader import load_recipe

    results = load_recipe("train").main([
        "--dataset_name", str(data_dir), "--output_dir", str(tmp_path), "--backbone", backbones["t5"],
        "--freeze_backbone", "--backbone_pooling", "last", "--num_memory_slots", "3", "--latent_size", "4",
        "--max_length", "30", "--max_steps", "2", "--eval_steps", "2", "--per_device_train_batch_size", "4",
        "--iw_samples", "2", "--disable_tqdm"])
    assert results["test"]["bleu4_corpus"] is not None and results["test"]["num_sentences"] == 4
    config = SentenceMIMPipeline.from_pretrained(tmp_path).model.config
    assert (config.freeze_backbone, config.backbone_pooling, config.num_memory_slots) == (True, "last", 3)


def test_fine_tuning_a_backbone_model_keeps_its_positions(cli_run, data_dir, tmp_path, capsys):
    """A backbone model was sized to --max-length 30 when it was built: fine-tuning may train on shorter sentences
    (the tokenizer then holds the limit) and change the overlong policy, never on longer ones."""
    common = ["train", "--dataset", data_dir, "--init-from", cli_run, "--max-steps", "1", "--batch-size", "4"]
    line = cli_error_line(capsys, *common, "--output-dir", tmp_path / "longer", "--max-length", "34")
    assert "--max-length 34" in line and "a pretrained backbone for 30 tokens only" in line
    status, _, err = run_cli(capsys, *common, "--output-dir", tmp_path / "shorter", "--max-length", "20",
                             "--overlong", "truncate")
    assert status == 0, err
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path / "shorter")
    assert (pipe.model.config.max_position_embeddings, pipe.model.config.overlong) == (30, "truncate")
    assert pipe.max_length == 20


def test_extend_vocabulary_is_refused_for_a_backbone_in_one_line(backbones, cli_run, data_dir, tmp_path, capsys):
    """A backbone's subword vocabulary has no unknown words to add: refused before any data is read."""
    common = ["train", "--dataset", data_dir, "--max-steps", "1", "--extend-vocabulary", "5"]
    line = cli_error_line(capsys, *common, "--output-dir", tmp_path / "new", "--backbone", backbones["gpt2"],
                          "--max-length", "30")
    assert "--extend-vocabulary 5: --backbone" in line and "keeps its own subword vocabulary" in line
    line = cli_error_line(capsys, *common, "--output-dir", tmp_path / "tuned", "--init-from", cli_run)
    assert f"--extend-vocabulary 5: {cli_run} has a pretrained backbone" in line
    assert not (tmp_path / "new").exists() and not (tmp_path / "tuned").exists()
