"""A streamed corpus on two processes: each process reads its own part of the stream, so the two never train on
the same sentence, and together they read the stream in order without gaps."""

import json
from pathlib import Path

import torch

from sentmim import SentenceMIMConfig, SentenceMIMModel
from sentmim.apps.corpus import builtin_sentences
from sentmim.data import load_text_dataset
from sentmim.options import TrainingOptions
from sentmim.preprocessing import tokenize_dataset
from sentmim.tokenization import train_tokenizer
from sentmim.training import train

SENTENCES = builtin_sentences(200, seed=4)


def stream_on_two_processes(folder: str) -> None:
    """Run by each of debug_launcher's processes: 3 steps of 8 sentences per process on the streamed corpus,
    writing the sentences this process trained on."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # a forked child inherits the parent's singletons
    tokenizer = train_tokenizer(SENTENCES, vocab_size=5000)  # every word known: decoding gives the text
    raw = load_text_dataset(str(Path(folder) / "corpus.txt"), streaming=True, validation_fraction=0.0)
    splits, _ = tokenize_dataset(raw, tokenizer, max_length=48)
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, latent_size=4,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    seen, forward = [], model.forward

    def recording_forward(*args, **kwargs):
        if model.training:
            for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"], strict=True):
                seen.append(tokenizer.decode(ids[mask.bool()], skip_special_tokens=True))
        return forward(*args, **kwargs)

    model.forward = recording_forward
    args = TrainingOptions(output_dir=str(Path(folder) / "run"), batch_size=8, max_steps=3, logging_steps=1,
                             disable_tqdm=True, cpu=True)
    result = train(model, tokenizer, {"train": splits["train"]}, args)
    rank = PartialState().process_index
    (Path(folder) / f"rank_{rank}.json").write_text(json.dumps({"step": result["step"], "seen": seen}))


def test_two_processes_read_disjoint_parts_of_a_stream(tmp_path, monkeypatch):
    from accelerate import debug_launcher

    (tmp_path / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    debug_launcher(stream_on_two_processes, args=(str(tmp_path),), num_processes=2)
    reports = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["step"] for report in reports] == [3, 3]
    first, second = (set(report["seen"]) for report in reports)
    assert len(first) == len(second) == 24  # 3 steps of 8 distinct sentences each
    assert not first & second
    assert first | second <= set(SENTENCES)



def noise_on_two_processes(folder: str) -> None:
    """Run by each of debug_launcher's processes: 2 steps of an sMIM on in-memory data, writing the standard normal
    noise eps = (z - mean) / std that each of its training steps drew."""
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # a forked child inherits the parent's singletons
    tokenizer = train_tokenizer(SENTENCES, vocab_size=5000)
    splits, _ = tokenize_dataset(load_text_dataset(str(Path(folder) / "corpus.txt"), validation_fraction=0.0),
                                 tokenizer, max_length=48)
    torch.manual_seed(0)
    model = SentenceMIMModel(SentenceMIMConfig(
        vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, latent_size=4,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    noise, forward = [], model.forward

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        if model.training:
            noise.append(((out.z - out.mean) * torch.exp(-0.5 * out.logvar)).detach().flatten().tolist())
        return out

    model.forward = recording_forward
    options = TrainingOptions(output_dir=str(Path(folder) / "run"), batch_size=8, max_steps=2, logging_steps=1,
                              disable_tqdm=True, cpu=True)
    train(model, tokenizer, {"train": splits["train"]}, options)
    (Path(folder) / f"noise_{PartialState().process_index}.json").write_text(json.dumps(noise))


def test_each_process_draws_its_own_noise(tmp_path, monkeypatch):
    """The same seed on every process would give every rank the same eps for its own batch (and the same dropout
    masks): seeds are seed + rank."""
    from accelerate import debug_launcher

    (tmp_path / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    debug_launcher(noise_on_two_processes, args=(str(tmp_path),), num_processes=2)
    first, second = (json.loads((tmp_path / f"noise_{rank}.json").read_text()) for rank in (0, 1))
    assert len(first) == len(second) == 2
    assert all(a != b for a, b in zip(first, second, strict=True))
