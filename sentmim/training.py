"""Training on accelerate (one CPU, one GPU, many GPUs or machines), as one class in the shape of a torchtune recipe:

    trainer = SentenceMIMTrainer(model, tokenizer, tokenized_splits, TrainingOptions(output_dir="runs/ptb-mim"))
    results = trainer.train()          # setup, then train_step / evaluate / save_checkpoint until done

Launch the same code on several processes with `accelerate launch` or `torchrun` (on CPU add ACCELERATE_USE_CPU=1).
What accelerate and transformers do here, and what a run leaves in output_dir: docs/architecture.md, "Training".

Resume continues exactly where the last checkpoint stopped: same weights, optimizer, learning-rate schedule, random
states and position in the (seeded, length-bucketed) batch order, so an interrupted run ends with the same parameters
as an uninterrupted one. It refuses options that would change the run and a different number of processes.
"""

import dataclasses
import itertools
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import broadcast, set_seed
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from tqdm.auto import tqdm

from . import checkpointing, lora, metrics, objectives, run_folder
from .aggregate_posterior import fit_aggregate_posterior
from .batching import make_dataloader
from .files import fsync_path, read_json, read_jsonl, write_json_atomic, write_text_atomic
from .model_folder import load_model
from .options import TrainingOptions, check_resume

logger = logging.getLogger(__name__)
RUN_FOLDER = "checkpoints/run"  # the run's tokenizer and config, saved before the first step so resume can rebuild it
RUNNING_TERMS = ("loss", "recon_nll", "kl", "nonfinite")  # per-step sums kept between log lines (nonfinite: a count)
AGGREGATE_FIT_SENTENCES = 100_000  # the aggregate posterior is fitted on at most this many training sentences


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the last good checkpoint."""


@dataclass
class TrainerState:
    """Where the run is; saved as trainer_state.json in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_val_loss: float | None = None
    evals_without_improvement: int = 0
    train_seconds: float = 0.0
    running: dict = field(default_factory=lambda: dict.fromkeys(RUNNING_TERMS, 0.0) | {"count": 0})


def train(model, tokenizer, splits, options: TrainingOptions, run_options: dict | None = None) -> dict:
    """Train `model` on splits["train"] (tokenized: an "input_ids" column), validating on splits["validation"]
    when present; the best model and its tokenizer are published in options.output_dir. Returns the final numbers.

    run_options: what else defines the run (data, tokenizer and model options), saved as run_options.json so that a
    resume can check them."""
    return SentenceMIMTrainer(model, tokenizer, splits, options, run_options).train()


class SentenceMIMTrainer:
    def __init__(self, model, tokenizer, splits, options: TrainingOptions, run_options: dict | None = None):
        for name in ("train", "validation"):  # an empty train split would loop forever over empty epochs
            if name in splits and hasattr(splits[name], "__len__") and len(splits[name]) == 0:
                raise ValueError(f"the {name} split has no sentences (all dropped as too long?)")
        self.streaming = isinstance(splits["train"], IterableDataset)
        if self.streaming and not options.max_steps:
            raise ValueError("a streamed train split has no length, so epochs cannot be counted: pass --max-steps")
        self.model, self.tokenizer, self.splits, self.options = model, tokenizer, splits, options
        self.run_options = run_options
        self.accelerator = make_accelerator(options)
        self.main = self.accelerator.is_main_process
        # Every process checks the folder before any of them writes to it: otherwise a slower process would find the
        # main process's first files and refuse the folder as "another run".
        self.output_dir = prepare_output_dir(options)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        if options.resume:
            check_num_processes(checkpointing.latest_checkpoint(self.checkpoints_dir), self.accelerator.num_processes)
        self.accelerator.wait_for_everyone()

    # -- the run ----------------------------------------------------------------------------------------------------

    def train(self) -> dict:
        # The main process holds the folder's lock for the whole run; it alone writes the folder's shared files.
        lock = run_folder.RunLock(self.output_dir) if self.main else None
        try:
            self.setup()
            self.run_epochs()
            return self.finish()
        finally:
            if lock is not None:
                lock.release()

    def setup(self) -> None:
        options, accelerator = self.options, self.accelerator
        self.prepare_folder()
        # Each process its own seed (seed + rank): otherwise every rank draws the same noise and dropout masks for
        # its own batch. One process is seeded with the seed itself.
        set_seed(options.seed, device_specific=True)
        self.train_loader, self.bucket_sampler = self.build_train_loader()
        self.validation_loader = None
        if "validation" in self.splits:
            self.validation_loader = make_dataloader(
                self.splits["validation"], options.eval_batch_size, self.model.config.pad_token_id, shuffle=False
            )
        optimizer = build_optimizer(self.model, options, fused=fused_adam_supported(accelerator.device))
        self.total_steps = self.count_steps()
        scheduler = build_scheduler(optimizer, options, self.total_steps)
        if self.streaming:  # already sharded by process; accelerate would dispatch whole batches from rank 0
            self.model, self.optimizer, self.scheduler = accelerator.prepare(self.model, optimizer, scheduler)
        else:
            self.model, self.optimizer, self.scheduler, self.train_loader = accelerator.prepare(
                self.model, optimizer, scheduler, self.train_loader
            )
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.state = TrainerState()
        if options.resume:
            folder = checkpointing.latest_checkpoint(self.checkpoints_dir)
            self.state = TrainerState(**checkpointing.load_checkpoint(accelerator, folder))
            logger.info("resumed from %s at step %d", folder, self.state.step)
        # Loss sums stay on the device between log lines: reading a number back every step would stall a GPU.
        self.running = torch.tensor([self.state.running[term] for term in RUNNING_TERMS], device=accelerator.device)
        resumed_step = self.state.step if options.resume else None
        self.log = JsonlLog(self.output_dir / "log.jsonl", resumed_step) if self.main else None
        if options.report_to == "tensorboard":
            accelerator.init_trackers("sentmim", config={k: str(v) for k, v in dataclasses.asdict(options).items()})

    def prepare_folder(self) -> None:
        """Replace an earlier run (--overwrite), save what a resume rebuilds the run from, and the options."""
        if self.main:
            if self.options.overwrite:
                run_folder.check_overwrite(self.output_dir, run_folder.RUN_LAYOUT)  # again, now that it is locked
                run_folder.clear(self.output_dir)
            self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            if not self.options.resume:
                self.tokenizer.save_pretrained(self.output_dir / RUN_FOLDER)
                self.model.config.save_pretrained(self.output_dir / RUN_FOLDER)
                lora.save_lora_config(self.model, self.output_dir / RUN_FOLDER)  # a LoRA run's adapters, for resume
                if self.run_options is not None:
                    write_json_atomic(self.output_dir / "run_options.json", self.run_options)
            write_json_atomic(self.output_dir / "training_args.json", dataclasses.asdict(self.options))
        self.accelerator.wait_for_everyone()

    def build_train_loader(self):
        """The training loader, and the object whose set_epoch fixes its batch order."""
        accelerator, split = self.accelerator, self.splits["train"]
        if self.streaming and accelerator.num_processes > 1:  # each process reads its own part of the stream
            split = split_dataset_by_node(split, accelerator.process_index, accelerator.num_processes)
        options = self.options
        loader = make_dataloader(split, options.batch_size, self.model.config.pad_token_id, shuffle=True,
                                 seed=options.seed)
        # Batch order comes from the seeded bucket sampler; a private generator keeps iterator creation from
        # consuming the global random state, which must only feed the model's noise and dropout (exact resume).
        loader.generator = torch.Generator().manual_seed(options.seed)
        return loader, loader.dataset if self.streaming else loader.batch_sampler

    def count_steps(self) -> int:
        if self.options.max_steps:
            return self.options.max_steps
        steps_per_epoch = math.ceil(len(self.train_loader) / self.options.gradient_accumulation_steps)
        return math.ceil(self.options.epochs * steps_per_epoch)

    def epoch_batches(self, epoch: int, skip: int):
        """This epoch's batches after the first `skip` (resume), on the device."""
        # accelerate's loader re-sets the sampler's epoch from its own iteration counter, which a resumed process
        # has not advanced: set both (with several processes the sampler is wrapped and only the first call reaches it)
        self.bucket_sampler.set_epoch(epoch)
        if self.streaming:
            device = self.accelerator.device
            batches = itertools.islice(self.train_loader, skip, None)
            return ({name: tensor.to(device) for name, tensor in batch.items()} for batch in batches)
        loader = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        loader.set_epoch(epoch)
        return loader

    def run_epochs(self) -> None:
        state = self.state
        # On a terminal only (disable=None): in a log file a bar is noise, and it would share the line of an error.
        self.progress = tqdm(total=self.total_steps, initial=state.step, desc="train",
                             disable=None if self.main and not self.options.disable_tqdm else True)
        # After a resume, wall-clock training time counts on from the checkpoint's
        self.started = time.time() - state.train_seconds
        self.stop = False
        self.model.train()
        while state.step < self.total_steps and not self.stop:
            for batch in self.epoch_batches(state.epoch, state.batches_in_epoch):
                if self.train_step(batch) and self.after_step():
                    break
            else:
                state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        self.progress.close()

    def train_step(self, batch) -> bool:
        """One batch; True when it completed an optimizer step (the last batch of a gradient accumulation)."""
        options, accelerator, state = self.options, self.accelerator, self.state
        with accelerator.accumulate(self.model):
            self.kl_weight = objectives.kl_weight(state.step, options)
            self.prior_weight = objectives.mim_prior_weight(state.step, options)
            out = self.model(**batch, kl_weight=self.kl_weight, free_bits=options.free_bits,
                             prior_weight=self.prior_weight, return_logits=False)
            loss = out.loss.detach()
            terms = [loss, -out.log_likelihood.detach().mean(), out.kl.detach().mean(), (~loss.isfinite()).float()]
            self.running += torch.stack(terms).to(self.running.dtype)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.model.parameters(), options.max_grad_norm)
            self.learning_rate = self.optimizer.param_groups[0]["lr"]  # of this update, for its log line
            self.optimizer.step()
            if accelerator.sync_gradients and options.lr_scheduler != "plateau":
                self.scheduler.step()
            self.optimizer.zero_grad()
        state.batches_in_epoch += 1
        state.running["count"] += 1
        return accelerator.sync_gradients

    def after_step(self) -> bool:
        """Log, validate and checkpoint on their schedules; True when the run is done."""
        options, state = self.options, self.state
        state.step += 1
        step, last = state.step, state.step == self.total_steps
        self.progress.update(1)
        if step % options.logging_steps == 0 or last:
            self.log_training()
        if self.validation_loader is not None and (step % options.eval_steps == 0 or last):
            self.evaluate()
        if step % (options.save_steps or options.eval_steps) == 0 or last or self.stop:
            self.save_checkpoint()
        return last or self.stop

    def log_training(self) -> None:
        self.check_finite()
        state = self.state
        record = {"step": state.step, "epoch": state.epoch, "kl_weight": self.kl_weight,
                  "lr": self.learning_rate, "elapsed_s": round(time.time() - self.started, 1)}
        if self.unwrapped.config.objective == "mim":
            record["mim_prior_weight"] = self.prior_weight
        averages = (self.running[:-1] / state.running["count"]).tolist()
        record.update({f"train_{name}": value for name, value in zip(RUNNING_TERMS, averages, strict=False)})
        self.running.zero_()
        state.running["count"] = 0
        self.progress.set_postfix(loss=f"{record['train_loss']:.2f}", kl=f"{record['train_kl']:.2f}")
        if self.main:
            self.log.write(record)
        self.accelerator.log(record, step=state.step)

    def evaluate(self) -> None:
        """Validate on the main process; every process then takes the same decisions from its loss."""
        state, options = self.state, self.options
        validation_loss = torch.tensor([math.nan], device=self.accelerator.device, dtype=torch.float64)
        if self.main:
            record = {"step": state.step, **validation_metrics(self.unwrapped, self.validation_loader,
                                                               seed=options.seed)}
            self.log.write(record)
            self.accelerator.log(record, step=state.step)
            logger.info("step %d: %s", state.step, {k: round(v, 4) for k, v in record.items()})
            validation_loss[0] = record["val_loss"]
        if self.accelerator.num_processes > 1:
            validation_loss = broadcast(validation_loss, from_process=0)
        loss = float(validation_loss[0])
        if state.best_val_loss is None or loss < state.best_val_loss:
            state.best_val_loss, state.evals_without_improvement = loss, 0
            if self.main:
                checkpointing.publish_model(self.output_dir, self.unwrapped, self.tokenizer)
        else:
            state.evals_without_improvement += 1
        if options.lr_scheduler == "plateau":
            self.scheduler.step(loss)
        patience = options.early_stopping_patience
        self.stop = patience > 0 and state.evals_without_improvement >= patience

    def fit_aggregate_posterior(self) -> None:
        """Fit the aggregate posterior of the published (best) model on the training split, unshuffled, once, and
        save it beside the model (sentmim.aggregate_posterior). The published weights are read back from the folder:
        the model in memory holds the last step's, which need not be the best."""
        published = load_model(self.output_dir).to(self.accelerator.device)
        split = self.splits["train"]
        split = split.take(AGGREGATE_FIT_SENTENCES) if self.streaming else split.select(
            range(min(len(split), AGGREGATE_FIT_SENTENCES)))
        loader = make_dataloader(split, self.options.eval_batch_size, published.config.pad_token_id, shuffle=False)
        fit_aggregate_posterior(published, loader).save(self.output_dir)

    def check_finite(self) -> None:
        """Stop on a NaN/inf loss, on every process at once. Checked at log lines and before each save."""
        if self.accelerator.gather(self.running[-1:]).sum():
            last = checkpointing.latest_checkpoint(self.checkpoints_dir)
            raise TrainingDiverged(
                f"the loss became nan or inf before step {self.state.step}; the last good checkpoint is "
                f"{last or 'none'}; lower --learning-rate or --max-grad-norm and resume"
            )

    def save_checkpoint(self) -> None:
        """A complete checkpoint in a staging folder, then renamed into place (checkpointing.publish)."""
        self.check_finite()  # never checkpoint weights that a NaN step has already spoilt
        staging = checkpointing.staging_dir(self.checkpoints_dir, self.state.step)
        if self.main:  # what an interrupted save left there (never a published checkpoint)
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.state.train_seconds = time.time() - self.started
        sums = dict(zip(RUNNING_TERMS, self.running.tolist(), strict=True))
        trainer_state = dataclasses.asdict(self.state) | {"running": sums | {"count": self.state.running["count"]}}
        checkpointing.save_checkpoint(self.accelerator, staging, trainer_state)
        if self.main:
            self.log.flush_to_disk()  # every event up to this step is on disk before the checkpoint that follows it
        self.accelerator.wait_for_everyone()
        if self.main:
            checkpointing.publish(self.checkpoints_dir, self.state.step, self.options.save_total_limit)

    def finish(self) -> dict:
        state, accelerator = self.state, self.accelerator
        accelerator.wait_for_everyone()
        if self.main:
            if state.best_val_loss is None:  # no validation ran: the last model is the run's
                checkpointing.publish_model(self.output_dir, self.unwrapped, self.tokenizer)
            self.fit_aggregate_posterior()
            results = {"step": state.step, "epoch": state.epoch, "best_val_loss": state.best_val_loss,
                       "stopped_early": self.stop, "train_seconds": round(time.time() - self.started, 1)}
            write_json_atomic(self.output_dir / "train_results.json", results)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return {"step": state.step, "best_val_loss": state.best_val_loss, "stopped_early": self.stop}


# -- pieces -----------------------------------------------------------------------------------------------------------


def make_accelerator(options: TrainingOptions) -> Accelerator:
    try:
        return Accelerator(
            gradient_accumulation_steps=options.gradient_accumulation_steps,
            mixed_precision=options.mixed_precision,
            cpu=options.cpu,
            log_with="tensorboard" if options.report_to == "tensorboard" else None,
            project_dir=options.output_dir,
            step_scheduler_with_optimizer=False,  # the schedules count optimizer steps, on any number of processes
        )
    except ValueError as error:  # accelerate keeps one state (precision, device) per process
        if "already been initialized" not in str(error):
            raise
        raise ValueError(
            f"--mixed-precision {options.mixed_precision} / --cpu {options.cpu}: this process already trained with "
            "other settings, and accelerate keeps one precision and device per process: start a new process"
        ) from None


def fused_adam_supported(device: torch.device) -> bool:
    """Whether Adam/AdamW have a fused kernel here: CUDA, and CPU since torch 2.4, where one fused step of an 11M
    parameter model takes ~21 ms against ~90 ms for the default (benchmarks/throughput)."""
    torch_version = tuple(int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cuda" or (device.type == "cpu" and torch_version >= (2, 4))


def build_optimizer(model, options: TrainingOptions, fused: bool) -> torch.optim.Optimizer:
    optimizer_class = torch.optim.AdamW if options.optimizer == "adamw" else torch.optim.Adam
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    # fused=None, not False, where there is no fused kernel: torch then picks its default implementation
    return optimizer_class(trainable, lr=options.learning_rate, weight_decay=options.weight_decay, fused=fused or None)


def build_scheduler(optimizer, options: TrainingOptions, total_steps: int):
    """transformers' warmup + constant / cosine schedules, stepped once per optimizer step; or torch's
    ReduceLROnPlateau, stepped at each evaluation (the learning rate drops by plateau_factor after plateau_patience
    evaluations without improvement)."""
    if options.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=options.plateau_factor, patience=options.plateau_patience - 1, threshold=0.0,
            threshold_mode="abs",
        )
    name = "cosine" if options.lr_scheduler == "cosine" else "constant_with_warmup"
    return transformers.get_scheduler(name, optimizer, num_warmup_steps=options.warmup_steps,
                                      num_training_steps=total_steps)


def prepare_output_dir(options: TrainingOptions, dataset: str | None = None) -> Path:
    """Check, writing nothing, that this run may use options.output_dir; every process calls it before any writes.

    The folder must be writable and not in use by a live run. A new run needs an empty or new folder; `overwrite`
    replaces an earlier run's folder, only if it holds nothing else and not `dataset`; `resume` needs a checkpoint
    and the options the run started with."""
    output_dir = Path(options.output_dir)
    run_folder.check_writable(output_dir)  # also refuses a file
    run_folder.check_not_locked(output_dir)
    used = output_dir.is_dir() and any(output_dir.iterdir())
    if options.resume:
        if checkpointing.latest_checkpoint(output_dir / "checkpoints") is None:
            raise ValueError(nothing_to_resume(output_dir))
        saved = output_dir / "training_args.json"
        if saved.is_file():
            check_resume(read_json(saved), dataclasses.asdict(options), options, saved)
        else:
            logger.warning("%s is missing: the resumed run's options cannot be checked against the run's", saved)
    elif options.overwrite:
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
    partial = checkpointing.step_folders(checkpoints)
    if partial:
        lacking = checkpointing.missing_files(partial[-1])
        return (f"--resume: no complete checkpoint in {checkpoints} ({partial[-1].name} lacks {', '.join(lacking)}); "
                "restore the missing files, or train into another output folder")
    if run_folder.is_marked(output_dir):
        return (f"--resume: the run in {output_dir} stopped before its first checkpoint, so there is nothing to "
                "resume; start it again with --overwrite")
    return f"--resume: no run to resume in {output_dir}; start the run without --resume"


def check_num_processes(checkpoint: Path, num_processes: int) -> None:
    """A step's batch is batch_size per process and each process has its own random state: a resume on another
    number of processes would not continue the same run, so it is refused."""
    saved = checkpointing.saved_num_processes(checkpoint)
    if saved != num_processes:
        raise ValueError(
            f"--resume: checkpoint {checkpoint} was written by {saved} process(es), this run has {num_processes}: "
            f"the batch of each step and the random states depend on it; resume with {saved} process(es)"
        )


@torch.no_grad()
def validation_metrics(model, loader, seed: int = 0) -> dict:
    """Validation loss terms per sentence, KL, whole-split MI (He et al.) and active units, in eval mode.

    Its z samples come from a forked, seeded random state: validation numbers are reproducible, and how often a run
    validates never changes its training trajectory."""
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model.eval()
        try:
            return _validation_metrics(model, loader)
        finally:
            model.train()


def _validation_metrics(model, loader) -> dict:
    totals = {"loss": 0.0, "recon_nll": 0.0, "kl": 0.0}
    means, logvars, samples = [], [], []
    targets = 0
    for batch in loader:
        batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
        out = model(**batch, return_logits=False)  # kl_weight 1: the full objective
        size = batch["input_ids"].size(0)
        totals["loss"] += out.loss.item() * size
        totals["recon_nll"] += -out.log_likelihood.sum().item()
        totals["kl"] += out.kl.sum().item()
        targets += int(metrics.num_targets(batch["input_ids"], batch["attention_mask"]).sum())
        means.append(out.mean.float().cpu())
        logvars.append(out.logvar.float().cpu())
        samples.append(out.z.float().cpu() if model.config.objective != "ae" else None)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    result = {f"val_{name}": value / len(mean) for name, value in totals.items()}
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
            records = read_jsonl(path, what_to_do="delete that line, then resume again")
            kept = [record for record in records if record.get("step", 0) <= keep_until_step]
            write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def flush_to_disk(self) -> None:
        if self.path.is_file():
            fsync_path(self.path)
