"""Training on a streamed corpus (`streaming=True`, for corpora larger than memory): it trains, saves a loadable
model, needs max_steps (a stream has no length), and resumes exactly, like the in-memory path. Also: the metrics
reach TensorBoard when report_to="tensorboard" (tensorboard is a dev dependency, so this always runs in CI)."""

import json

import pytest
import torch

from sentmim import checkpointing
from sentmim.apps.corpus import builtin_sentences
from sentmim.assembly import train_from_options
from sentmim.options import DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from sentmim.pipeline import SentenceMIMPipeline

MODEL = {"embedding_size": 16, "hidden_size": 32, "latent_size": 8, "objective": "vae", "dropout": 0.1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "corpus.txt"
    path.write_text("\n".join(builtin_sentences(300, seed=3)) + "\n")
    return str(path)


def run_training(corpus, training: TrainingOptions):
    """A streamed run: the data, tokenizer and model options of every test here, and `training`."""
    return train_from_options(
        DatasetOptions(dataset=corpus), DataOptions(streaming=True, max_length=32, max_validation_sentences=20),
        TokenizerOptions(tokenizer="word", vocab_size=300), ModelOptions(**MODEL), training,
    )


def arguments(output_dir, **overrides) -> TrainingOptions:
    settings = dict(batch_size=8, max_steps=24, eval_steps=6, logging_steps=3, disable_tqdm=True, seed=5,
                    kl_schedule="linear", kl_anneal_steps=10)
    return TrainingOptions(output_dir=str(output_dir), **(settings | overrides))


def parameters(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_streamed_run_trains_and_saves_a_loadable_model(corpus, tmp_path):
    _, _, results = run_training(corpus, arguments(tmp_path))
    assert results["step"] == 24
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    validations = [record for record in log if "val_loss" in record]
    assert [record["step"] for record in validations] == [6, 12, 18, 24]
    assert all(torch.isfinite(torch.tensor(record["val_loss"])) for record in validations)
    pipe = SentenceMIMPipeline.from_pretrained(tmp_path)
    assert pipe.encode(["the cat sat ."]).shape == (1, 8)


def test_streamed_run_needs_max_steps(corpus, tmp_path):
    with pytest.raises(ValueError, match="--max-steps"):
        run_training(corpus, arguments(tmp_path, max_steps=None))


def test_streamed_run_resumes_exactly(corpus, tmp_path, monkeypatch):
    # 300 sentences minus ~5% validation at batch 8 is ~36 batches per epoch: 24 + 24 steps cross an epoch end.
    reference, _, _ = run_training(corpus, arguments(tmp_path / "whole", max_steps=48))
    expected = parameters(reference)

    real_publish = checkpointing.publish

    def publish_then_interrupt(checkpoints_dir, step, keep):
        folder = real_publish(checkpoints_dir, step, keep)
        if step == 30:
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(checkpointing, "publish", publish_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(corpus, arguments(tmp_path / "split", max_steps=48))
    monkeypatch.setattr(checkpointing, "publish", real_publish)
    resumed, _, results = run_training(corpus, arguments(tmp_path / "split", max_steps=48, resume=True))
    assert results["step"] == 48
    actual = parameters(resumed)
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def test_tensorboard_receives_the_logged_metrics(corpus, tmp_path):
    import yaml
    from tensorboard.backend.event_processing import event_accumulator

    run_training(corpus, arguments(tmp_path, max_steps=6, report_to="tensorboard"))
    event_files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert event_files, "report_to='tensorboard' wrote no event file"
    # under the project name that run_folder.RUN_LAYOUT knows, so that --overwrite can replace the run
    assert all(path.relative_to(tmp_path).parts[0] == "sentmim" for path in event_files)
    events = event_accumulator.EventAccumulator(str(event_files[0].parent))
    events.Reload()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    logged = {record["step"]: record["train_loss"] for record in log if "train_loss" in record}
    scalars = {event.step: event.value for event in events.Scalars("train_loss")}
    assert scalars.keys() == logged.keys()
    assert all(scalars[step] == pytest.approx(logged[step], rel=1e-6) for step in logged)
    assert "val_mi_whole_split" in events.Tags()["scalars"]
    # the run's options reach TensorBoard's hyper-parameter record (accelerate also writes them as hparams.yml)
    hparams = list(tmp_path.rglob("hparams.yml"))
    assert len(hparams) == 1
    recorded = yaml.safe_load(hparams[0].read_text())
    assert recorded["max_steps"] == "6" and recorded["report_to"] == "tensorboard"
