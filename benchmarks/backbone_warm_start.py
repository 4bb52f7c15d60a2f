"""Warm start from a pretrained backbone: sMIM on PTB from a small GPT-2-style LM pretrained here on PTB, against the
same architecture from its random initial weights, with the same steps and settings (issue #13).

    nice .venv/bin/python benchmarks/backbone_warm_start.py --dataset ../shared/data/ptb \
        --work-dir /tmp/backbone-warm-start --output benchmarks/backbones      # ~11 min on 2 shared cores
    .venv/bin/python benchmarks/backbone_warm_start.py --smoke --dataset DIR --work-dir W --output O   # seconds

1. The backbone. There is no network here to fetch GPT-2, so one is made. Tokenizer: byte-level BPE trained on PTB
   train with GPT-2's conventions (one special token, <|endoftext|>, which is BOS, EOS and unknown; no pad). It is
   chosen over a word-level vocabulary because it is what a real GPT-2 brings, so the run goes through everything
   sentmim does to such a tokenizer (a new BOS copied from <|endoftext|>, a new pad, BLEU over the decoded text),
   and because PTB's words are then still what BLEU counts. Model: transformers' GPT2LMHeadModel, pretrained at its
   own task, next-token prediction over "<|endoftext|> sentence <|endoftext|>" (AdamW, linear warmup and cosine
   decay). Saved as Hugging Face folders in WORK: ptb-gpt2 (pretrained) and ptb-gpt2-random (the same config with
   the initial weights of the pretraining, before any step). The tokenizers of the two folders are the same.
2. sMIM from each folder with `sentmim.assembly.train_from_options`, the code behind `sentmim train --backbone
   FOLDER`, with the same options and seed: only the backbone's initial weights differ (the latent layers start
   from the same seed, so they are the same too). The runs validate every --eval-every steps (log.jsonl) on the
   first --validation-sentences sentences of the validation split (`sentmim train` validates on all of them; the
   recorded command is otherwise the run's) and keep a checkpoint at each of those steps.
3. The curves. From each run's log.jsonl: the validation reconstruction term -log p(x|z) (nats per sentence) and
   the reconstruction perplexity exp(sum -log p(x|z) / targets), at one posterior sample z, as the training loop
   logs them. For every checkpoint, `sentmim.evaluation.evaluate` on the
   first --eval-sentences validation sentences: -log p(x|z = posterior mean) and corpus BLEU-4 of the greedy
   reconstruction of the posterior mean (sacreBLEU, tokenize='none', over the decoded text: PTB's words). Step 0
   is the model the run starts from (built as the run builds it), scored with the same two functions.
4. --output receives results.json (every number, the settings, the machine), table.md and curves.png.

A stage is skipped when WORK already holds its result made with the same settings, so a stopped run continues
from the last finished stage and the report can be redrawn without training again.
"""

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from sentmim import checkpointing, metrics
from sentmim.assembly import build_model, load_training_splits, train_from_options
from sentmim.backbones import load_backbone_tokenizer
from sentmim.batching import make_dataloader
from sentmim.console import configure_console
from sentmim.evaluation import default_decode_length, evaluate, reconstruct_batch
from sentmim.files import read_jsonl, write_json_atomic
from sentmim.model_folder import load_model
from sentmim.options import DataOptions, DatasetOptions, ModelOptions, TokenizerOptions, TrainingOptions
from sentmim.plots import new_figure, save_figure
from sentmim.preprocessing import tokenize_dataset
from sentmim.training import RUN_FOLDER, validation_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info

END_OF_TEXT = "<|endoftext|>"
BACKBONES = {"pretrained": "ptb-gpt2", "random": "ptb-gpt2-random"}  # run label -> backbone folder in WORK
# --smoke: the whole pipeline in seconds, on any small corpus (tests/test_backbone_warm_start.py)
SMOKE = {"vocab_size": 300, "layers": 1, "width": 16, "heads": 2, "pretrain_steps": 4, "pretrain_batch_size": 8,
         "smim_steps": 4, "batch_size": 8, "latent_size": 4, "eval_every": 2, "eval_sentences": 8}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/ptb", help="PTB: a folder with train / valid files")
    parser.add_argument("--work-dir", default="runs/backbone-warm-start", help="the backbones and the sMIM runs")
    parser.add_argument("--output", default="benchmarks/backbones", help="results.json, table.md, curves.png")
    parser.add_argument("--vocab-size", type=int, default=4096, help="byte-level BPE vocabulary size")
    parser.add_argument("--layers", type=int, default=2, help="GPT-2 blocks")
    parser.add_argument("--width", type=int, default=128, help="GPT-2 model width")
    parser.add_argument("--heads", type=int, default=4, help="GPT-2 attention heads")
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="causal-LM pretraining steps")
    parser.add_argument("--pretrain-batch-size", type=int, default=64, help="sentences per pretraining step")
    parser.add_argument("--pretrain-learning-rate", type=float, default=2e-3, help="pretraining peak learning rate")
    parser.add_argument("--smim-steps", type=int, default=800, help="sMIM steps of each run")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per sMIM step")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="sMIM learning rate (constant)")
    parser.add_argument("--latent-size", type=int, default=32, help="dimension of z")
    parser.add_argument("--eval-every", type=int, default=100, help="validate and checkpoint every N sMIM steps")
    parser.add_argument("--validation-sentences", type=int, default=1000,
                        help="the runs validate on the first N sentences of the validation split")
    parser.add_argument("--eval-sentences", type=int, default=300,
                        help="first N validation sentences scored by evaluate (BLEU) at each checkpoint")
    parser.add_argument("--max-length", type=int, default=40, help="longest sentence in tokens, BOS and EOS included")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, the batch order and every sample")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (one is fastest on a small model and a shared machine)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny sizes and a few steps (seconds), to check the script runs: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def stage_done(mark: Path, settings: dict) -> bool:
    """Whether `mark` records a finished stage made with these settings."""
    return mark.is_file() and json.loads(mark.read_text()).get("settings") == settings


# -- 1. the backbone --------------------------------------------------------------------------------------------------


def train_gpt2_style_tokenizer(texts, vocab_size: int) -> GPT2Tokenizer:
    """Byte-level BPE with GPT-2's conventions: no prefix space, one special token for BOS, EOS and unknown."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    spec = json.loads(backend.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in spec["merges"]]
    return GPT2Tokenizer(vocab=spec["vocab"], merges=merges)


def sentence_examples(tokenizer, texts, max_length: int):
    """Each sentence as <|endoftext|> ids <|endoftext|>, longer ones dropped, as sMIM's data drops them. The adapted
    tokenizer's new BOS is a copy of <|endoftext|>, so sMIM then reads sentences as the LM was pretrained on them."""
    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    rows = [[end, *ids, end] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    return Dataset.from_dict({"input_ids": [row for row in rows if len(row) <= max_length]})


def language_model_nll(model, loader) -> float:
    """Mean NLL per predicted token (nats) of next-token prediction over the real tokens; one forward per batch."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in loader:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            targets = labels[:, 1:]
            total += torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100,
                                                       reduction="sum").item()
            count += int((targets != -100).sum())
    model.train()
    return total / count


def pretrain_backbone(args, splits, work_dir: Path) -> dict:
    """Stage 1: tokenizer, random initial weights, causal-LM pretraining; both folders saved. Returns its record."""
    folder, random_folder = work_dir / BACKBONES["pretrained"], work_dir / BACKBONES["random"]
    settings = {name: getattr(args, name) for name in (
        "dataset", "vocab_size", "layers", "width", "heads", "pretrain_steps", "pretrain_batch_size",
        "pretrain_learning_rate", "max_length", "validation_sentences", "seed")}
    mark = work_dir / "pretraining.json"
    if stage_done(mark, settings):
        print(f"stage 1: the backbones in {work_dir} are reused ({mark})")
        return json.loads(mark.read_text())
    started = time.time()
    tokenizer = train_gpt2_style_tokenizer(splits["train"]["text"], args.vocab_size)
    end = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=args.width, n_layer=args.layers,
                        n_head=args.heads, bos_token_id=end, eos_token_id=end)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(random_folder)
    tokenizer.save_pretrained(random_folder)

    train = sentence_examples(tokenizer, splits["train"]["text"], args.max_length)
    validation = sentence_examples(tokenizer, splits["validation"]["text"], args.max_length)
    loader = make_dataloader(train, args.pretrain_batch_size, pad_token_id=end, shuffle=True, seed=args.seed)
    validation_loader = make_dataloader(validation, 128, pad_token_id=end, shuffle=False)
    random_nll = language_model_nll(model, validation_loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_learning_rate, weight_decay=0.01)
    warmup = max(1, args.pretrain_steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then cosine decay to 0
        optimizer, lambda step: min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / args.pretrain_steps))))
    curve, step, epoch = [{"step": 0, "validation_nll_per_token": random_nll}], 0, 0
    report_every = max(1, args.pretrain_steps // 5)
    while step < args.pretrain_steps:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % report_every == 0 or step == args.pretrain_steps:
                curve.append({"step": step, "validation_nll_per_token": language_model_nll(model, validation_loader)})
                print(f"pretraining step {step}: train loss {loss.item():.3f}, validation perplexity "
                      f"{math.exp(curve[-1]['validation_nll_per_token']):.1f} ({time.time() - started:.0f} s)",
                      flush=True)
            if step == args.pretrain_steps:
                break
        epoch += 1
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = {
        "settings": settings,
        "tokenizer": {"kind": "byte-level BPE, GPT-2 conventions", "vocab_size": len(tokenizer)},
        "model": {"class": "GPT2LMHeadModel", "n_layer": args.layers, "n_embd": args.width, "n_head": args.heads,
                  "n_positions": 128, "parameters": sum(p.numel() for p in model.parameters())},
        "train_sentences": len(train), "validation_sentences": len(validation),
        "epochs": round(args.pretrain_steps * args.pretrain_batch_size / len(train), 2),
        "curve": curve,
        "validation_ppl_random": math.exp(random_nll),
        "validation_ppl_pretrained": math.exp(curve[-1]["validation_nll_per_token"]),
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomic(mark, record)  # last: its presence means both folders are complete
    print(f"stage 1: pretrained in {record['seconds']:.0f} s, validation perplexity per token "
          f"{record['validation_ppl_random']:.0f} (random) -> {record['validation_ppl_pretrained']:.1f}")
    return record


# -- 2. sMIM from each backbone ---------------------------------------------------------------------------------------


def run_options(args, backbone: Path, output_dir: Path):
    """The options of `sentmim train` for one run; the two runs differ only in the backbone folder."""
    return (
        DatasetOptions(dataset=args.dataset),
        DataOptions(max_length=args.max_length),
        TokenizerOptions(),
        ModelOptions(backbone=str(backbone), objective="mim", latent_size=args.latent_size),
        TrainingOptions(
            output_dir=str(output_dir), overwrite=True, batch_size=args.batch_size, max_steps=args.smim_steps,
            learning_rate=args.learning_rate, eval_steps=args.eval_every, logging_steps=args.eval_every,
            save_total_limit=args.smim_steps // args.eval_every + 1, seed=args.seed, disable_tqdm=True,
        ),
    )


def equivalent_command(args, backbone: Path, output_dir: Path) -> str:
    return shlex.join([
        "sentmim", "train", "--dataset", args.dataset, "--output-dir", str(output_dir), "--backbone", str(backbone),
        "--objective", "mim", "--latent-size", str(args.latent_size), "--max-length", str(args.max_length),
        "--batch-size", str(args.batch_size), "--max-steps", str(args.smim_steps), "--learning-rate",
        str(args.learning_rate), "--eval-steps", str(args.eval_every), "--logging-steps", str(args.eval_every),
        "--save-total-limit", str(args.smim_steps // args.eval_every + 1), "--seed", str(args.seed), "--overwrite",
    ])


def train_smim(args, splits, backbone: Path, output_dir: Path, pretraining: dict) -> None:
    settings = {"backbone": pretraining["settings"], **{name: getattr(args, name) for name in (
        "smim_steps", "batch_size", "learning_rate", "latent_size", "eval_every", "max_length", "validation_sentences",
        "seed")}}
    mark = output_dir.with_name(output_dir.name + ".done.json")  # beside the run: --overwrite refuses foreign files
    if stage_done(mark, settings):
        print(f"stage 2: the run in {output_dir} is reused")
        return
    print(f"stage 2: {equivalent_command(args, backbone, output_dir)}", flush=True)
    started = time.time()
    train_from_options(*run_options(args, backbone, output_dir), splits=splits)
    write_json_atomic(mark, {"settings": settings, "seconds": round(time.time() - started, 1)})


# -- 3. the curves ----------------------------------------------------------------------------------------------------


def reconstruction_scores(model, tokenizer, first_sentences, seed: int) -> dict:
    """evaluate's reconstruction numbers on the first validation sentences: BLEU and -log p(x|z = posterior mean)."""
    results = evaluate(model, first_sentences, tokenizer, iw_samples=0, seed=seed, progress=False)
    recon_ppl_mean_z = metrics.perplexity(results["recon_nll_mean_z"] * results["num_sentences"],
                                          results["num_targets"])
    return {"recon_nll_mean_z": results["recon_nll_mean_z"], "recon_ppl_mean_z": recon_ppl_mean_z,
            "bleu4_corpus": results["bleu4_corpus"], "bleu1_sentence_mean": results["bleu1_sentence_mean"],
            "bleu_signature": results["bleu_signature"], "eval_sentences": results["num_sentences"]}


def checkpoint_model(output_dir: Path, checkpoint: Path):
    """The model of a checkpoint: its weights (accelerate's model.safetensors) with the run's config.json, put side
    by side in a scratch folder so that the library's checked loader reads them as a model folder."""
    with tempfile.TemporaryDirectory(prefix="checkpoint-model-") as scratch:
        for source in (output_dir / RUN_FOLDER / "config.json", checkpoint / "model.safetensors"):
            (Path(scratch) / source.name).symlink_to(source.resolve())
        return load_model(scratch)


def check_logged(output_dir: Path, step: int, logged: dict, recomputed: dict) -> None:
    """The last checkpoint's validation, recomputed, must be what the run logged: the checkpoints hold the models the
    log describes."""
    for key in ("val_loss", "val_recon_nll"):
        if not math.isclose(recomputed[key], logged[key], rel_tol=1e-5, abs_tol=1e-5):
            raise RuntimeError(f"{output_dir}: step {step}: {key} is {logged[key]} in log.jsonl but {recomputed[key]} "
                               "recomputed from its checkpoint")


def curves_of_run(args, splits, backbone: Path, output_dir: Path) -> dict:
    """Step 0 (the model the run starts from) and every validation step of the run: the logged validation numbers,
    and evaluate's reconstruction numbers of the checkpoint of that step."""
    tokenizer = load_backbone_tokenizer(str(backbone))
    tokenized, _ = tokenize_dataset(DatasetDict(validation=splits["validation"]), tokenizer, args.max_length)
    validation = tokenized["validation"]
    pad = tokenizer.pad_token_id
    validation_loader = make_dataloader(validation, TrainingOptions.eval_batch_size, pad, shuffle=False)
    first = list(make_dataloader(validation.select(range(min(args.eval_sentences, len(validation)))), 64, pad,
                                 shuffle=False))
    _, data_options, _, model_options, training = run_options(args, backbone, output_dir)
    set_seed(training.seed)  # as train_from_options seeds before building: this is the model the run starts from
    model = build_model(data_options, model_options, tokenizer, output_dir, resume=False)
    points = [{"step": 0, **validation_metrics(model, validation_loader, seed=training.seed),
               **reconstruction_scores(model, tokenizer, first, args.seed)}]

    logged = {record["step"]: record for record in read_jsonl(output_dir / "log.jsonl") if "val_loss" in record}
    checkpoints = checkpointing.complete_checkpoints(output_dir / "checkpoints")
    for checkpoint in checkpoints:
        step = checkpointing.checkpoint_step(checkpoint)
        model = checkpoint_model(output_dir, checkpoint)
        if checkpoint == checkpoints[-1]:
            check_logged(output_dir, step, logged[step], validation_metrics(model, validation_loader,
                                                                            seed=training.seed))
        points.append({**logged[step], **reconstruction_scores(model, tokenizer, first, args.seed)})
    with torch.no_grad():  # four sentences of middling length (batches are length-bucketed)
        ids, mask = first[len(first) // 2]["input_ids"][:4], first[len(first) // 2]["attention_mask"][:4]
        hypotheses, references = reconstruct_batch(model, tokenizer, ids, model.eval().encode(ids, mask)[0],
                                                   default_decode_length(model, tokenizer))
    return {"curve": points, "last_step_reconstructions": [
        {"input": reference, "reconstruction": hypothesis}
        for reference, hypothesis in zip(references, hypotheses, strict=True)]}


# -- 4. the report ----------------------------------------------------------------------------------------------------

PLOTTED = (("val_recon_ppl", "validation reconstruction perplexity\n(one posterior sample; log scale)"),
           ("bleu4_corpus", "reconstruction BLEU-4 (posterior mean, greedy;\nfirst validation sentences)"))


def plot_curves(runs: dict, language_model_ppl: float, path: Path) -> None:
    figure, axes = new_figure(1, len(PLOTTED), size=(11, 4.2))
    for axis, (key, title) in zip(axes[0], PLOTTED, strict=True):
        for label, run in runs.items():
            steps = [point["step"] for point in run["curve"]]
            axis.plot(steps, [point[key] for point in run["curve"]], marker="o", label=f"from the {label} backbone")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("sMIM step")
        if key == "val_recon_ppl":
            axis.axhline(language_model_ppl, color="gray", linestyle="--",
                         label="the pretrained LM alone, without z\n(perplexity per token, same sentences)")
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    save_figure(figure, path)


def markdown_table(runs: dict, args) -> str:
    labels = list(runs)
    header = ["step"] + [f"{name} ({label})" for name in ("val recon PPL", "val -log p(x\\|z)", "BLEU-4",
                                                          "active units") for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for index, point in enumerate(runs[labels[0]]["curve"]):
        row = [str(point["step"])]
        for key, digits in (("val_recon_ppl", 1), ("val_recon_nll", 1), ("bleu4_corpus", 1),
                            ("val_active_units", 0)):
            row += [f"{runs[label]['curve'][index][key]:.{digits}f}" for label in labels]
        lines.append("| " + " | ".join(row) + " |")
    notes = (
        "\nval recon PPL = exp(sum -log p(x|z) / targets) and val -log p(x|z) (nats per sentence) at one posterior "
        f"sample, over the run's validation set (the first {args.validation_sentences} sentences of the validation "
        f"split, less those over {args.max_length} tokens), from each run's log.jsonl (step 0: the same function on "
        "the starting model). BLEU-4 = sacreBLEU corpus BLEU, tokenize='none' over the decoded text, of the greedy "
        f"reconstruction of the posterior mean of the first {args.eval_sentences} of those sentences. Active units: "
        "dimensions of z with Var_x E[z|x] >= 0.01 over the validation set. A reconstruction perplexity is not a "
        "likelihood.\n"
    )
    return "\n".join(lines) + "\n" + notes


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.time()
    work_dir, output = Path(args.work_dir), Path(args.output)
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    splits = load_training_splits(DatasetOptions(dataset=args.dataset), DataOptions(), args.seed)
    splits["validation"] = splits["validation"].select(range(min(args.validation_sentences,
                                                                 len(splits["validation"]))))
    machine = machine_info(torch.get_num_threads())
    pretraining = pretrain_backbone(args, splits, work_dir)
    runs = {}
    for label, folder_name in BACKBONES.items():
        backbone, run_dir = work_dir / folder_name, work_dir / f"smim-{label}"
        train_smim(args, splits, backbone, run_dir, pretraining)
        runs[label] = {"backbone": str(backbone), "command": equivalent_command(args, backbone, run_dir),
                       **curves_of_run(args, splits, backbone, run_dir)}
    results = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["main", *argv]),
        "machine": machine, "settings": vars(args), "pretraining": pretraining, "runs": runs,
        "wall_seconds": round(time.time() - started, 1),
    }
    write_json_atomic(output / "results.json", results)
    (output / "table.md").write_text(markdown_table(runs, args))
    plot_curves(runs, pretraining["validation_ppl_pretrained"], output / "curves.png")
    print((output / "table.md").read_text())
    return results


if __name__ == "__main__":
    configure_console(verbose=True, progress=False)  # sentmim's INFO lines: data counts, validation results
    main()
