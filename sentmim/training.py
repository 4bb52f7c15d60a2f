"""The training loop: one function, `train`, on accelerate (one CPU, one GPU, many GPUs or machines).

    model = SentenceMIMModel(config)
    train(model, tokenizer, tokenized_splits, TrainingArguments(output_dir="runs/ptb-mim", max_steps=20000))

Launch the same code on several processes with `accelerate launch` or `torchrun` (on CPU add ACCELERATE_USE_CPU=1).

What a run leaves in output_dir:
    config.json, model.safetensors, tokenizer files   the model with the best validation loss (or the last one when
                                                       there is no validation split): load it with
                                                       SentenceMIMPipeline / AutoModel.from_pretrained. Published
                                                       atomically: a reader sees the previous model or the new one
    checkpoints/step_N/, checkpoints/latest            resumable states (see sentmim.checkpointing)
    checkpoints/run/                                   the run's tokenizer and config (resume rebuilds from them)
    log.jsonl                                          one JSON object per logging / evaluation event
    training_args.json, run_options.json               the options the run started with (resume checks them)
    train_results.json
    .sentmim-run                                       marks the folder as a run's; locked while a run writes it
                                                       (see sentmim.run_folder)

Resume (`resume=True`) continues exactly where the last checkpoint stopped: same weights, optimizer, learning-rate
and KL schedules, random state and position in the (seeded, length-bucketed) batch order, so an interrupted run
ends with the same parameters as an uninterrupted one. It refuses options that would change the run
(RESUME_MAY_CHANGE lists the ones that may change) and a different number of processes.
"""

import dataclasses
import itertools
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast, set_seed
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from tqdm.auto import tqdm

from . import checkpointing, metrics, run_folder
from .batching import make_dataloader
from .files import fsync_path, read_json, write_json_atomic
from .objectives import kl_weight_from_config

logger = logging.getLogger(__name__)
RUN_FOLDER = "checkpoints/run"  # the run's tokenizer and config, saved before the first step so resume can rebuild it
RUNNING_TERMS = ("loss", "recon_nll", "kl", "nonfinite")  # per-step sums kept between log lines (nonfinite: a count)


@dataclass
class TrainingArguments:
    output_dir: str
    batch_size: int = 32  # per process
    eval_batch_size: int = 128
    max_steps: int | None = None  # optimizer steps; overrides epochs
    epochs: float = 1.0
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    lr_scheduler: str = "constant"  # constant | cosine | plateau (x plateau_factor when validation stalls)
    warmup_steps: int = 0
    plateau_factor: float = 0.25
    plateau_patience: int = 2  # evaluations without improvement before the learning rate drops
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | bf16 | fp16
    eval_steps: int = 500
    save_steps: int | None = None  # default: eval_steps
    logging_steps: int = 50
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 never stops
    save_total_limit: int = 2
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    report_to: str = "none"  # none | tensorboard
    cpu: bool = False
    progress: bool = True

    def __post_init__(self):
        choices = {"optimizer": ("adam", "adamw"), "lr_scheduler": ("constant", "cosine", "plateau"),
                   "mixed_precision": ("no", "bf16", "fp16"), "report_to": ("none", "tensorboard")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                value = getattr(self, name)
                raise ValueError(f"training argument {name}={value!r} is invalid: use {', '.join(allowed)}")
        ranges = {  # name: (lowest, highest, integer?); a strict lower bound is written as (low, "exclusive")
            "batch_size": (1, None, True), "eval_batch_size": (1, None, True), "max_steps": (1, None, True),
            "epochs": ((0, "exclusive"), None, False), "learning_rate": ((0, "exclusive"), None, False),
            "weight_decay": (0, None, False), "max_grad_norm": ((0, "exclusive"), None, False),
            "warmup_steps": (0, None, True), "plateau_factor": ((0, "exclusive"), 1, False),
            "plateau_patience": (1, None, True), "gradient_accumulation_steps": (1, None, True),
            "eval_steps": (1, None, True), "save_steps": (1, None, True), "logging_steps": (1, None, True),
            "early_stopping_patience": (0, None, True), "save_total_limit": (1, None, True),
            "seed": (0, 2**32 - 1, True),
        }
        for name, (low, high, integer) in ranges.items():
            value = getattr(self, name)
            if value is None and name in ("max_steps", "save_steps"):
                continue
            problem = out_of_range(value, low, high, integer)
            if problem:
                raise ValueError(f"training argument {name}={value!r} is invalid: must be {problem}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues a run, overwrite deletes it")


def out_of_range(value, low, high=None, integer: bool = False) -> str | None:
    """None if `value` is a finite number (an integer if asked) in the range, else the range in words.
    `low` may be (number, "exclusive") for a strict lower bound."""
    exclusive = isinstance(low, tuple)
    low = low[0] if exclusive else low
    kind = "an integer" if integer else "a finite number"
    words = f"{kind} {'>' if exclusive else '>='} {low}" + (f" and <= {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        return words
    if not math.isfinite(value) or value < low or (exclusive and value == low) or (high is not None and value > high):
        return words
    return None


# Options that may differ when a run is resumed, because they cannot change the weights it ends with: where and how
# verbosely it runs, how often it logs and checkpoints, how many checkpoints it keeps.
RESUME_MAY_CHANGE = {"output_dir", "resume", "overwrite", "cpu", "progress", "report_to", "logging_steps",
                     "save_steps", "save_total_limit"}
# May change unless the cosine schedule, which decays over the run's length, is used: the run's length.
RESUME_LENGTH = {"max_steps", "epochs"}
# May change unless evaluations steer training (plateau schedule, early stopping): evaluation settings.
RESUME_EVALUATION = {"eval_steps", "eval_batch_size"}


def check_resume_arguments(saved: dict, args: TrainingArguments, source: Path) -> None:
    """Refuse, naming the option with its old and new values, a resume whose arguments would change the run."""
    steered = args.lr_scheduler == "plateau" or args.early_stopping_patience > 0
    conditional = RESUME_LENGTH | RESUME_EVALUATION
    for name, old in sorted(saved.items(), key=lambda item: item[0] in conditional):  # the plain refusals first
        if not hasattr(args, name) or name in RESUME_MAY_CHANGE:
            continue
        new = getattr(args, name)
        if new == old:
            continue
        if name in RESUME_LENGTH and args.lr_scheduler != "cosine":
            continue
        if name in RESUME_EVALUATION and not steered:
            continue
        why = {
            **dict.fromkeys(RESUME_LENGTH, "the cosine schedule decays over the run's length"),
            **dict.fromkeys(RESUME_EVALUATION, "evaluations steer this run (plateau schedule or early stopping)"),
        }.get(name, "it would change the run")
        raise ValueError(
            f"--resume: option {name} was {old!r} when this run started ({source}), now {new!r}: {why}; resume with "
            f"{old!r}, or train into another output folder"
        )


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


class LearningRateSchedule:
    """Linear warmup, then constant or cosine decay, times a factor that drops when validation stalls (plateau)."""

    def __init__(self, args: TrainingArguments, total_steps: int):
        self.kind, self.warmup, self.total = args.lr_scheduler, args.warmup_steps, total_steps
        self.factor, self.patience = args.plateau_factor, args.plateau_patience
        self.scale, self.best, self.stalled = 1.0, math.inf, 0

    def multiplier(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine":
            progress = min(1.0, max(0, step - self.warmup) / max(1, self.total - self.warmup))
            warm *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * self.scale

    def report(self, validation_loss: float) -> None:
        if validation_loss < self.best:
            self.best, self.stalled = validation_loss, 0
            return
        self.stalled += 1
        if self.kind == "plateau" and self.stalled >= self.patience:
            self.scale *= self.factor
            self.stalled = 0
            logger.info("validation loss stalled: learning rate x%s", self.factor)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None, "stalled": self.stalled}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.stalled = state["scale"], state["stalled"]
        self.best = math.inf if state["best"] is None else state["best"]


def prepare_output_dir(args: TrainingArguments, dataset: str | None = None) -> Path:
    """Check, writing nothing, that this run may use args.output_dir; every process calls it before any writes.

    The folder must be writable and not in use by a live run. A new run needs an empty or new folder; `overwrite`
    replaces an earlier run's folder, only if it holds nothing else and not `dataset`; `resume` needs a checkpoint
    and the options the run started with."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output dir {output_dir} is a file: pass a folder path")
    run_folder.check_writable(output_dir)
    run_folder.check_not_locked(output_dir)
    used = output_dir.is_dir() and any(output_dir.iterdir())
    if args.resume:
        if checkpointing.latest_checkpoint(output_dir / "checkpoints") is None:
            raise ValueError(nothing_to_resume(output_dir))
        saved = output_dir / "training_args.json"
        if saved.is_file():
            check_resume_arguments(read_json(saved), args, saved)
        else:
            logger.warning("%s is missing: the resumed run's options cannot be checked against the run's", saved)
    elif args.overwrite:
        run_folder.check_overwrite(output_dir, run_folder.RUN_LAYOUT, dataset)
    elif used and run_folder.is_marked(output_dir):
        raise ValueError(
            f"output dir {output_dir} already holds a run: pass --overwrite to replace it (only the files the run "
            "wrote are deleted) or --resume to continue it"
        )
    elif used:
        held = run_folder.describe(sorted(output_dir.iterdir()), output_dir)
        raise ValueError(f"output dir {output_dir} already holds files ({held}): choose a new or empty folder")
    return output_dir


def nothing_to_resume(output_dir: Path) -> str:
    """Why --resume cannot start, and what to do, never advising a deletion of checkpoints that exist."""
    checkpoints = output_dir / "checkpoints"
    partial = sorted(p for p in checkpoints.glob("step_*") if p.is_dir()) if checkpoints.is_dir() else []
    if partial:
        lacking = checkpointing.missing_files(partial[-1])
        return (f"--resume: no complete checkpoint in {checkpoints} ({partial[-1].name} lacks {', '.join(lacking)}); "
                "restore the missing files, or train into another output folder")
    if run_folder.is_marked(output_dir):
        return (f"--resume: the run in {output_dir} stopped before its first checkpoint, so there is nothing to "
                "resume; start it again with --overwrite")
    return f"--resume: no run to resume in {output_dir}; start the run without --resume"


@torch.no_grad()
def validation_metrics(model, loader, kl_weight: float = 1.0, seed: int = 0) -> dict:
    """Validation loss terms per sentence, KL, whole-split MI (He et al.) and active units, in eval mode.

    Its z samples come from a forked, seeded random state: validation numbers are reproducible, and how often a run
    validates never changes its training trajectory."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _validation_metrics(model, loader, kl_weight)


def _validation_metrics(model, loader, kl_weight: float) -> dict:
    model.eval()
    totals = {"loss": 0.0, "recon_nll": 0.0, "kl": 0.0}
    means, logvars, samples = [], [], []
    count, targets = 0, 0
    for batch in loader:
        batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
        out = model(**batch, kl_weight=kl_weight, return_logits=False)
        size = batch["input_ids"].size(0)
        totals["loss"] += out.loss.item() * size
        totals["recon_nll"] += -out.log_likelihood.sum().item()
        totals["kl"] += out.kl.sum().item()
        targets += int(metrics.num_targets(batch["input_ids"], batch["attention_mask"]).sum())
        means.append(out.mean.float().cpu())
        logvars.append(out.logvar.float().cpu())
        samples.append(out.z.float().cpu() if model.config.objective != "ae" else None)
        count += size
    model.train()
    result = {f"val_{name}": value / count for name, value in totals.items()}
    mean, logvar = torch.cat(means), torch.cat(logvars)
    z = None if samples[0] is None else torch.cat(samples)
    result["val_recon_ppl"] = math.exp(totals["recon_nll"] / targets)
    result["val_mi_whole_split"] = metrics.mutual_information(mean, logvar, z=z)
    result["val_active_units"] = metrics.active_units(mean)
    return result


class JsonlLog:
    """Appends one JSON object per event; on resume drops the events logged after the checkpoint's step.

    A torn last line (the process or the machine died while writing it) is dropped: its event comes after the
    checkpoint, because the log is flushed to disk before every checkpoint, and is logged again. A damaged line
    elsewhere is an error that names the file and the line."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        if keep_until_step is not None and path.is_file():
            lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
            kept = []
            for number, line in enumerate(lines, start=1):
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise json.JSONDecodeError("not a JSON object", line, 0)
                except json.JSONDecodeError as error:
                    if number == len(lines):
                        logger.warning("%s: dropped its torn last line %r; its event is logged again", path, line[:60])
                        break
                    raise ValueError(
                        f"{path} line {number} is not JSON ({error.msg}): delete that line, then resume again"
                    ) from None
                if record.get("step", 0) <= keep_until_step:
                    kept.append(line)
            checkpointing.write_text_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def flush_to_disk(self) -> None:
        if self.path.is_file():
            fsync_path(self.path)


def fused_adam_supported(device: torch.device) -> bool:
    """Whether Adam/AdamW have a fused kernel here: CUDA, and CPU since torch 2.4, where one fused step of an 11M
    parameter model takes ~21 ms against ~90 ms for the default (benchmarks/throughput)."""
    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return device.type == "cpu" and (major, minor) >= (2, 4)


def build_optimizer(model, args: TrainingArguments, fused: bool) -> torch.optim.Optimizer:
    options = {"lr": args.learning_rate, "weight_decay": args.weight_decay}
    if fused:
        options["fused"] = True
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(model.parameters(), **options)


def train(model, tokenizer, splits, args: TrainingArguments, run_options: dict | None = None) -> dict:
    """Train `model` on splits["train"] (tokenized: an "input_ids" column), validating on splits["validation"]
    when present. Returns the final metrics; the best model and tokenizer are saved in args.output_dir.

    run_options: what else defines the run (data, tokenizer and model options; sentmim.experiment passes its
    RunOptions), saved as run_options.json so that a resume can check them."""
    for name in ("train", "validation"):  # an empty train split would loop forever over empty epochs
        if name in splits and hasattr(splits[name], "__len__") and len(splits[name]) == 0:
            raise ValueError(f"the {name} split has no sentences (all dropped as too long?)")
    if isinstance(splits["train"], IterableDataset) and not args.max_steps:
        raise ValueError("a streamed train split has no length, so epochs cannot be counted: pass --max-steps")
    # accelerate keeps one AcceleratorState per process and refuses a second run in it (a notebook, the benchmark)
    # with another mixed precision; start afresh, keeping the process group (PartialState).
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        log_with="tensorboard" if args.report_to == "tensorboard" else None,
        project_dir=args.output_dir,
    )
    # Every process checks the folder before any of them writes to it: otherwise a slower process would find the
    # main process's first files and refuse the folder as "another run".
    output_dir = prepare_output_dir(args)
    if args.resume:
        check_num_processes(checkpointing.latest_checkpoint(output_dir / "checkpoints"), accelerator.num_processes)
    accelerator.wait_for_everyone()
    # The main process holds the folder's lock for the whole run; it alone writes the folder's shared files.
    lock = run_folder.RunLock(output_dir) if accelerator.is_main_process else None
    try:
        return _train(model, tokenizer, splits, args, accelerator, output_dir, run_options)
    finally:
        if lock is not None:
            lock.release()


def check_num_processes(checkpoint: Path, num_processes: int) -> None:
    """A step's batch is batch_size per process and each process has its own random state: a resume on another
    number of processes would not continue the same run, so it is refused."""
    saved = checkpointing.saved_num_processes(checkpoint)
    if saved != num_processes:
        raise ValueError(
            f"--resume: checkpoint {checkpoint} was written by {saved} process(es), this run has {num_processes}: "
            f"the batch of each step and the random states depend on it; resume with {saved} process(es)"
        )


def _train(model, tokenizer, splits, args: TrainingArguments, accelerator, output_dir: Path, run_options) -> dict:
    main = accelerator.is_main_process
    if main:
        if args.overwrite:
            run_folder.check_overwrite(output_dir, run_folder.RUN_LAYOUT)  # again, now that the folder is locked
            run_folder.clear(output_dir, run_folder.RUN_LAYOUT)
        (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not args.resume:
            tokenizer.save_pretrained(output_dir / RUN_FOLDER)
            model.config.save_pretrained(output_dir / RUN_FOLDER)
            if run_options is not None:
                write_json_atomic(output_dir / "run_options.json", run_options)
        write_json_atomic(output_dir / "training_args.json", dataclasses.asdict(args))
    accelerator.wait_for_everyone()
    set_seed(args.seed)
    logger.info("%s", accelerator.state)

    config = model.config
    streaming = isinstance(splits["train"], IterableDataset)
    train_split = splits["train"]
    if streaming and accelerator.num_processes > 1:  # each process reads its own part of the stream
        train_split = split_dataset_by_node(train_split, accelerator.process_index, accelerator.num_processes)
    train_loader = make_dataloader(train_split, args.batch_size, config.pad_token_id, shuffle=True, seed=args.seed)
    # Batch order comes from the seeded bucket sampler; a private generator keeps iterator creation from consuming
    # the global random state, which must only feed the model's noise and dropout (exact resume).
    train_loader.generator = torch.Generator().manual_seed(args.seed)
    bucket_sampler = train_loader.dataset if streaming else train_loader.batch_sampler
    validation_loader = None
    if "validation" in splits:
        validation_loader = make_dataloader(
            splits["validation"], args.eval_batch_size, config.pad_token_id, shuffle=False
        )
    optimizer = build_optimizer(model, args, fused=fused_adam_supported(accelerator.device))
    if streaming:  # already sharded by process above; accelerate would dispatch whole batches from rank 0
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    unwrapped = accelerator.unwrap_model(model)

    if args.max_steps:
        total_steps = args.max_steps
    else:
        steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
        total_steps = math.ceil(args.epochs * steps_per_epoch)
    schedule = LearningRateSchedule(args, total_steps)
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best_val_loss": None, "evals_without_improvement": 0,
             "train_seconds": 0.0,
             "running": dict.fromkeys(RUNNING_TERMS, 0.0) | {"count": 0}}  # sums since the last log line
    checkpoints_dir = output_dir / "checkpoints"
    if args.resume:
        folder = checkpointing.latest_checkpoint(checkpoints_dir)
        state = checkpointing.load_checkpoint(folder, unwrapped, optimizer, accelerator.process_index)
        schedule.load_state_dict(state.pop("schedule"))
        logger.info("resumed from %s at step %d", folder, state["step"])
    # Loss sums stay on the device between log lines: reading a number back every step would stall a GPU.
    running = torch.tensor([state["running"].get(term, 0.0) for term in RUNNING_TERMS], device=accelerator.device)
    log = JsonlLog(output_dir / "log.jsonl", state["step"] if args.resume else None) if main else None
    if args.report_to == "tensorboard":
        accelerator.init_trackers("sentmim", config={k: str(v) for k, v in dataclasses.asdict(args).items()})

    def save_checkpoint() -> None:
        staging = checkpointing.staging_dir(checkpoints_dir, state["step"])
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        checkpointing.save_rng_state(staging, accelerator.process_index)
        check_finite()  # never checkpoint weights that a NaN step has already spoilt
        state["train_seconds"] = time.time() - started
        if main:
            sums = dict(zip(RUNNING_TERMS, running.tolist(), strict=True))
            trainer_state = {**state, "running": sums | {"count": state["running"]["count"]},
                             "schedule": schedule.state_dict()}
            checkpointing.save_main_state(staging, unwrapped.state_dict(), optimizer, trainer_state)
            log.flush_to_disk()  # every event up to this step is on disk before the checkpoint that follows it
        accelerator.wait_for_everyone()
        if main:
            checkpointing.publish(checkpoints_dir, state["step"], args.save_total_limit)

    def check_finite() -> None:
        """Stop on a NaN/inf loss, on every process at once. Checked at log lines and before each save."""
        nonfinite = accelerator.gather(running[-1:]).sum()
        if nonfinite:
            last = checkpointing.latest_checkpoint(checkpoints_dir)
            raise TrainingDiverged(
                f"the loss became nan or inf before step {state['step']}; the last good checkpoint is "
                f"{last or 'none'}; lower --learning-rate or --max-grad-norm and resume"
            )

    def epoch_batches(epoch: int, skip: int):
        """This epoch's batches after the first `skip` (resume), on the device."""
        # accelerate's loader re-sets the sampler's epoch from its own iteration counter, which a resumed process
        # has not advanced: set both (with several processes the sampler is wrapped and only the first call reaches it)
        bucket_sampler.set_epoch(epoch)
        if streaming:
            batches = itertools.islice(train_loader, skip, None)
            return ({name: tensor.to(accelerator.device) for name, tensor in batch.items()} for batch in batches)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loader.set_epoch(epoch)
        return loader

    # On a terminal only (disable=None): in a log file a bar is noise, and it would share the line of an error.
    progress = tqdm(total=total_steps, initial=state["step"], disable=None if main and args.progress else True,
                    desc="train")
    # After a resume, wall-clock training time counts on from the checkpoint's
    stop, started = False, time.time() - state.get("train_seconds", 0.0)
    model.train()
    while state["step"] < total_steps and not stop:
        for batch in epoch_batches(state["epoch"], state["batches_in_epoch"]):
            with accelerator.accumulate(model):
                beta = kl_weight_from_config(config, state["step"])
                out = model(**batch, kl_weight=beta, return_logits=False)
                loss = out.loss.detach()
                terms = [loss, -out.log_likelihood.detach().mean(), out.kl.detach().mean(), (~loss.isfinite()).float()]
                running += torch.stack(terms).to(running.dtype)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                for group in optimizer.param_groups:
                    group["lr"] = args.learning_rate * schedule.multiplier(state["step"])
                optimizer.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            state["running"]["count"] += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            progress.update(1)
            if step % args.logging_steps == 0 or step == total_steps:
                check_finite()
                record = {"step": step, "epoch": state["epoch"], "kl_weight": beta,
                          "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(time.time() - started, 1)}
                averages = (running[:-1] / state["running"]["count"]).tolist()
                record.update({f"train_{name}": value for name, value in zip(RUNNING_TERMS, averages, strict=False)})
                running.zero_()
                state["running"]["count"] = 0
                progress.set_postfix(loss=f"{record['train_loss']:.2f}", kl=f"{record['train_kl']:.2f}")
                if main:
                    log.write(record)
                accelerator.log(record, step=step)
            if validation_loader is not None and (step % args.eval_steps == 0 or step == total_steps):
                if main:
                    record = {"step": step, **validation_metrics(unwrapped, validation_loader, seed=args.seed)}
                    log.write(record)
                    logger.info("step %d: %s", step, {k: round(v, 4) for k, v in record.items()})
                    improved = state["best_val_loss"] is None or record["val_loss"] < state["best_val_loss"]
                    if improved:
                        state["best_val_loss"], state["evals_without_improvement"] = record["val_loss"], 0
                        checkpointing.publish_model(output_dir, unwrapped, tokenizer)
                    else:
                        state["evals_without_improvement"] += 1
                    schedule.report(record["val_loss"])
                    accelerator.log(record, step=step)
                if accelerator.num_processes > 1:  # only the main process evaluated: share its decisions
                    best = math.nan if state["best_val_loss"] is None else state["best_val_loss"]
                    shared = torch.tensor(
                        [schedule.scale, state["evals_without_improvement"], best], device=accelerator.device,
                        dtype=torch.float64,
                    )
                    shared = broadcast(shared, from_process=0).tolist()
                    schedule.scale, state["evals_without_improvement"] = shared[0], int(shared[1])
                    state["best_val_loss"] = None if math.isnan(shared[2]) else shared[2]
                patience = args.early_stopping_patience
                stop = patience > 0 and state["evals_without_improvement"] >= patience
            if step % (args.save_steps or args.eval_steps) == 0 or step == total_steps or stop:
                save_checkpoint()
            if step >= total_steps or stop:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    progress.close()
    accelerator.wait_for_everyone()
    if main:
        if validation_loader is None or state["best_val_loss"] is None:
            checkpointing.publish_model(output_dir, unwrapped, tokenizer)
        results = {"step": state["step"], "epoch": state["epoch"], "best_val_loss": state["best_val_loss"],
                   "stopped_early": stop, "train_seconds": round(time.time() - started, 1)}
        (output_dir / "train_results.json").write_text(json.dumps(results, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": state["step"], "best_val_loss": state["best_val_loss"], "stopped_early": stop}
