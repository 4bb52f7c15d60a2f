"""SentenceMIMPipeline is a transformers Pipeline: calling it reconstructs, exactly as `reconstruct` does, with its
options, batch size and device reaching the model; `transformers.pipeline("sentence-reconstruction", model=folder)`
builds the same pipeline offline, through sentmim's own loaders, so no code from the folder runs."""

import json
import logging

import datasets
import pytest
import torch
import transformers
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import KeyDataset

from sentmim import SentenceMIMPipeline
from sentmim.model_folder import AutoSentenceMIMModel
from sentmim.pipeline import TASK
from tests.test_untrusted_model_folder import plant_code
from tests.test_wiring_pipeline import make_pipe as wide_weights_pipe
from tests.test_wiring_pipeline import stored_gaussian

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the bird sang .", "it rained .", ""]
LONG = "the cat sat on the mat and the dog ran in the park ."  # 15 tokens with BOS and EOS


def make_pipe(tiny_config, **kwargs) -> SentenceMIMPipeline:
    """An untrained model with wide weights (long, varied sentences, so that beams and noise change them) whose
    tokenizer's limit, 8 tokens, binds."""
    return wide_weights_pipe(tiny_config, tokenizer_max_length=8, **kwargs)


def texts(outputs: list[dict]) -> list[str]:
    assert all(set(output) == {"reconstruction_text"} for output in outputs)
    return [output["reconstruction_text"] for output in outputs]


def spy_on_encode(pipe) -> list[int]:
    """Record the batch size of every call to the model's encoder."""
    sizes, encode = [], pipe.model.encode

    def recording_encode(input_ids, attention_mask):
        sizes.append(input_ids.size(0))
        return encode(input_ids, attention_mask)

    pipe.model.encode = recording_encode
    return sizes


def test_the_pipeline_is_a_transformers_pipeline_registered_under_its_task(tiny_config):
    pipe = make_pipe(tiny_config)
    assert isinstance(pipe, transformers.Pipeline)
    assert pipe.task == TASK == "sentence-reconstruction"
    assert TASK in PIPELINE_REGISTRY.get_supported_tasks()
    assert "SentenceMIMPipeline" in repr(pipe)


@pytest.mark.parametrize("options", [{}, {"num_beams": 3}, {"no_repeat_ngram_size": 2}])
def test_calling_the_pipeline_is_reconstruct(tiny_config, options):
    pipe = make_pipe(tiny_config, batch_size=2)
    expected = pipe.reconstruct(SENTENCES, **options)
    assert texts(pipe(SENTENCES, **options)) == expected
    assert pipe(SENTENCES[1], **options) == {"reconstruction_text": expected[1]}  # one sentence, one answer
    if options:  # the option reached the decoder: it changes what greedy decoding writes
        assert expected != pipe.reconstruct(SENTENCES)


def test_options_given_at_construction_apply_to_every_call(tiny_config):
    pipe = make_pipe(tiny_config, num_beams=3)
    assert texts(pipe(SENTENCES)) == pipe.reconstruct(SENTENCES, num_beams=3) != pipe.reconstruct(SENTENCES)
    assert texts(pipe(SENTENCES, num_beams=1)) == pipe.reconstruct(SENTENCES)  # a call's option wins


def fixed_noise(shape, *args, **kwargs) -> torch.Tensor:
    """Stands in for torch.randn: the same "draws" in the pipeline call and in reconstruct (transformers' DataLoader
    takes a number from torch's global generator, so seeding alike would not give the same draws)."""
    shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)
    return torch.linspace(-1.5, 1.5, torch.Size(shape).numel(), dtype=kwargs.get("dtype")).reshape(shape)


@pytest.mark.parametrize("mode, noise", [("sample", None), ("perturb", 0.5)])
def test_the_latent_mode_and_noise_reach_the_model(tiny_config, monkeypatch, mode, noise):
    pipe = make_pipe(tiny_config)
    monkeypatch.setattr(torch, "randn", fixed_noise)
    monkeypatch.setattr(torch, "randn_like", lambda tensor: fixed_noise(tensor.shape, dtype=tensor.dtype))
    options = {"mode": mode} | ({"noise": noise} if noise is not None else {})
    expected = pipe.reconstruct(SENTENCES, **options)
    assert texts(pipe(SENTENCES, batch_size=len(SENTENCES), **options)) == expected
    assert expected != pipe.reconstruct(SENTENCES)
    if noise is not None:
        assert texts(pipe(SENTENCES, mode=mode, batch_size=len(SENTENCES))) != expected  # the default noise, 0.1
    assert texts(pipe(SENTENCES, mode="perturb", noise=0.0)) == pipe.reconstruct(SENTENCES)
    with pytest.raises(ValueError, match="mode='nearest'"):
        pipe(SENTENCES, mode="nearest")


def test_batch_size_of_the_pipeline_and_of_a_call(tiny_config):
    pipe = make_pipe(tiny_config, batch_size=3)
    expected = pipe.reconstruct(SENTENCES)
    sizes = spy_on_encode(pipe)
    assert texts(pipe(SENTENCES)) == expected
    assert sizes == [3, 2]  # the pipeline's batch_size is the call's default (transformers' own default is 1)
    sizes.clear()
    assert texts(pipe(SENTENCES, batch_size=2)) == expected
    assert sizes == [2, 2, 1]
    sizes.clear()
    streamed = pipe((sentence for sentence in SENTENCES), batch_size=1)  # a generator: an iterator back
    assert texts(list(streamed)) == expected
    assert sizes == [1] * 5
    sizes.clear()
    column = KeyDataset(datasets.Dataset.from_dict({"text": SENTENCES}), "text")  # transformers' way over a dataset
    assert texts(list(pipe(column, batch_size=4))) == expected
    assert sizes == [4, 1]


def test_the_pipeline_stays_on_its_models_device_unless_told(tiny_config):
    pipe = make_pipe(tiny_config)
    assert pipe.device == pipe.model.device == torch.device("cpu")
    moved = SentenceMIMPipeline(pipe.model, pipe.tokenizer, device="cpu")
    assert moved.device == torch.device("cpu")
    assert texts(moved(SENTENCES)) == pipe.reconstruct(SENTENCES)
    assert SentenceMIMPipeline(pipe.model, pipe.tokenizer, device=-1).device == torch.device("cpu")


def test_overlong_sentences_are_truncated_keeping_eos_with_a_count_per_batch(tiny_config, caplog):
    pipe = make_pipe(tiny_config, batch_size=3)
    sentences = [LONG, "it rained .", LONG, "the bird sang ."]
    with caplog.at_level(logging.WARNING, logger="sentmim"):
        outputs = texts(pipe(sentences))
    warnings = [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()]
    assert warnings == ["2 of 3 sentences exceed 8 tokens and were truncated"]  # the second batch has none
    cut = pipe.tokenizer.decode(pipe.tokenizer(LONG)["input_ids"][1:7])  # 6 words: BOS + 6 + EOS = 8 tokens
    assert outputs == pipe.reconstruct([cut, "it rained .", cut, "the bird sang ."])


def test_empty_input_and_bad_input(tiny_config):
    pipe = make_pipe(tiny_config)
    assert pipe([]) == []
    assert texts(pipe([""])) == pipe.reconstruct([""])
    with pytest.raises(TypeError, match="a int was given, not a string"):
        pipe(["it rained .", 3])
    with pytest.raises(TypeError, match="unknown option.*kl_wieght"):
        pipe(SENTENCES, kl_wieght=1.0)


# -- transformers.pipeline(task, model=folder) ------------------------------------------------------------------------


@pytest.fixture
def saved(tiny_config, tmp_path):
    pipe = make_pipe(tiny_config, aggregate_posterior=stored_gaussian())
    pipe.save_pretrained(tmp_path / "model")
    return pipe, tmp_path / "model"


def test_transformers_pipeline_loads_a_local_folder_offline(saved, monkeypatch):
    original, folder = saved
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = transformers.pipeline(TASK, model=str(folder))
    assert type(pipe) is SentenceMIMPipeline and pipe.source == folder
    assert texts(pipe(SENTENCES)) == original.reconstruct(SENTENCES)
    torch.testing.assert_close(pipe.aggregate_posterior.mean, stored_gaussian().mean)  # read from the folder too
    assert pipe.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    from_pretrained = SentenceMIMPipeline.from_pretrained(folder)
    torch.testing.assert_close(pipe.encode(SENTENCES), from_pretrained.encode(SENTENCES))


def test_transformers_pipeline_passes_its_options_on(saved):
    original, folder = saved
    pipe = transformers.pipeline(TASK, model=folder, device="cpu", batch_size=2, num_beams=3, dtype=torch.float64)
    assert pipe.batch_size == 2 and pipe.device == torch.device("cpu") and pipe.model.dtype == torch.float64
    sizes = spy_on_encode(pipe)
    assert texts(pipe(SENTENCES)) == original.reconstruct(SENTENCES, num_beams=3)
    assert sizes == [2, 2, 1]
    with_tokenizer_folder = transformers.pipeline(TASK, model=original.model, tokenizer=str(folder))
    assert texts(with_tokenizer_folder(SENTENCES)) == original.reconstruct(SENTENCES)


def test_transformers_pipeline_checks_the_folder_as_sentmim_does(saved):
    """The task's model class is sentmim's checked loader: weights that disagree with config.json are refused, not
    re-initialised with a warning as transformers' own loading would."""
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        transformers.pipeline(TASK, model=folder)


def test_the_tasks_model_class_refuses_what_it_cannot_honour(saved):
    _, folder = saved
    assert AutoSentenceMIMModel.from_pretrained(folder, dtype="float64").dtype == torch.float64
    assert AutoSentenceMIMModel.from_pretrained(folder, dtype="auto").dtype == torch.float32  # as saved
    with pytest.raises(ValueError, match="trust_remote_code=True: sentmim never runs code"):
        AutoSentenceMIMModel.from_pretrained(folder, trust_remote_code=True)
    with pytest.raises(ValueError, match="device_map not supported"):
        AutoSentenceMIMModel.from_pretrained(folder, device_map="auto")


@pytest.mark.parametrize("trust_remote_code", [None, False])
def test_transformers_pipeline_runs_no_code_from_the_folder(saved, tmp_path, monkeypatch, trust_remote_code):
    """auto_map in config.json and tokenizer_config.json (the tokenizer's class exists only in the folder's code),
    and a user who answers y to any question: the pipeline loads, nothing from the folder runs."""
    original, folder = saved
    marker = tmp_path / "CODE-RAN"
    plant_code(folder, marker)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    pipe = transformers.pipeline(TASK, model=folder, trust_remote_code=trust_remote_code)
    assert texts(pipe(SENTENCES)) == original.reconstruct(SENTENCES)
    assert asked == [] and not marker.exists()


def test_a_custom_pipeline_named_in_the_folder_is_refused_not_run(saved, tmp_path, monkeypatch):
    _, folder = saved
    marker = tmp_path / "CODE-RAN"
    plant_code(folder, marker)
    config = json.loads((folder / "config.json").read_text())
    config["custom_pipelines"] = {TASK: {"impl": "custom_code.CustomPipeline", "pt": ["AutoModel"]}}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.pipeline(TASK, model=folder)
    assert not marker.exists()


def test_a_folder_of_another_model_type_runs_no_code_with_trust_remote_code_false(saved, tmp_path, monkeypatch):
    """What the module docstring tells users to do with a folder they did not write: transformers reads config.json
    before sentmim is asked, and left unset it would ask whether to run the code a foreign model type names."""
    _, folder = saved
    marker = tmp_path / "CODE-RAN"
    plant_code(folder, marker)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "not-in-transformers"
    (folder / "config.json").write_text(json.dumps(config))
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.pipeline(TASK, model=folder, trust_remote_code=False)
    with pytest.raises(ValueError, match="not a sentmim model"):
        SentenceMIMPipeline.from_pretrained(folder)
    assert asked == [] and not marker.exists()


def test_saving_writes_no_code_into_the_folder(saved):
    """transformers' Pipeline.save_pretrained would copy the pipeline's module into the folder as custom code and
    name it in config.json; sentmim's writes the model, tokenizer and aggregate posterior only."""
    _, folder = saved
    assert not list(folder.glob("*.py"))
    assert "custom_pipelines" not in json.loads((folder / "config.json").read_text())
    assert (folder / "aggregate_posterior.safetensors").is_file()
