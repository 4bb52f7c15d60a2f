"""Every option of sentmim's entry points, defined once: a dataclass field with its help text and default.

    parser = HfArgumentParser((DatasetOptions, DataOptions, TokenizerOptions, ModelOptions, TrainingOptions))
    dataset, data, tokenizer, model, training = parser.parse_args_into_dataclasses()

The CLI, the benchmark and the recipes parse these same dataclasses, so a flag means the same thing everywhere, under
each of its spellings (docs/architecture.md, "Options"). Constructing a dataclass checks its values: a bad one raises
`OptionError`, which names the option and states the valid range.

What a resumed run may change is decided here too (`check_resume`; the rule and why: docs/errors.md).
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args, get_origin


class OptionError(ValueError):
    """An option out of its range; `str()` is the library's message, `flag_message()` the command line's."""

    def __init__(self, name: str, value, valid: str):
        super().__init__(f"{name}={value!r} is invalid: must be {valid}")
        self.name, self.value, self.valid = name, value, valid

    def flag_message(self) -> str:
        return f"argument --{self.name.replace('_', '-')}: {self.value} is out of range: must be {self.valid}"


def option(default=dataclasses.MISSING, help: str = "", aliases: tuple[str, ...] = (), flag: bool = False):
    """A dataclass field with the help text (and other spellings) HfArgumentParser shows and accepts.

    flag: a `bool | None` option that is true when given without a value (`--freeze-backbone`), as a plain bool
    option is; HfArgumentParser would otherwise want a value for it."""
    metadata = {"help": help}
    if aliases:
        metadata["aliases"] = list(aliases)
    if flag:
        metadata.update(nargs="?", const=True)
    if isinstance(default, list):  # each instance gets its own list
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# Ranges: (lowest, highest, kind). kind "int": an integer; "float": a finite number; a strict bound is written as
# ("above", x) or ("below", x).
def check_ranges(options, ranges: dict) -> None:
    for name, (low, high, kind) in ranges.items():
        value = getattr(options, name)
        if value is None:
            continue
        bounded = low is not None and high is not None
        words = "an integer" if kind == "int" else "a number" if bounded else "a finite number"
        parts = []
        if low is not None:
            parts.append(f"> {low[1]}" if isinstance(low, tuple) else f">= {low}")
        if high is not None:
            parts.append(f"< {high[1]}" if isinstance(high, tuple) else f"<= {high}")
        valid = f"{words} {' and '.join(parts)}".strip()
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else int | float):
            raise OptionError(name, value, valid)
        too_low = low is not None and (value <= low[1] if isinstance(low, tuple) else value < low)
        too_high = high is not None and (value >= high[1] if isinstance(high, tuple) else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise OptionError(name, value, valid)


def check_choices(options) -> None:
    """Literal-typed fields hold one of their choices (HfArgumentParser checks the command line; this checks
    Python callers)."""
    for item in dataclasses.fields(options):
        literals = [kind for kind in (item.type, *get_args(item.type)) if get_origin(kind) is Literal]  # or | None
        allowed = [choice for literal in literals for choice in get_args(literal)]
        value = getattr(options, item.name)
        if allowed and value is not None and value not in allowed:
            raise ValueError(f"{item.name}={value!r} is invalid: use one of {', '.join(map(str, allowed))}")


# The ranges most options share.
COUNT, POSITIVE, SEED = (0, None, "int"), (1, None, "int"), (0, 2**32 - 1, "int")
RATE = (0, ("below", 1), "float")

# LoRA's defaults, here so that the options' help, lora_settings and lora.add_lora state the same values
LORA_ALPHA = 16
LORA_DROPOUT = 0.0


class Options:
    """Base of the option dataclasses: constructing one checks its Literal choices and its `ranges`."""

    ranges: ClassVar[dict] = {}

    def __post_init__(self):
        check_choices(self)
        check_ranges(self, self.ranges)


@dataclass
class DatasetOptions(Options):
    """Which text: a dataset and, optionally, one of its splits and its text column."""

    dataset: str = option(
        "builtin", "'builtin' (the package's demo corpus), a Hugging Face Hub dataset id, a local file (.txt one "
        "sentence per line, .jsonl, .csv, .tsv, .parquet), a folder of such files (file names with train / valid / "
        "test pick the split), or a folder written by save_to_disk", aliases=("--dataset_name", "--dataset-name"))
    dataset_config: str | None = option(
        None, "configuration name of a Hub dataset", aliases=("--dataset_config_name", "--dataset-config-name"))
    split: str | None = option(
        None, "use only this split or slice, in datasets syntax ('train', 'train[:10%%]', 'train[:1000]+test'); "
        "default: every split (sentmim evaluate: test)", aliases=("--train_split", "--train-split"))
    text_column: str | None = option(None, "the column holding the text; default: 'text', or the only text column")
    split_sentences: bool = option(
        False, "each row holds a document or paragraph: split it into sentences (at blank lines, then by the nupunkt "
        "segmenter) and use every sentence as an example")


@dataclass
class DataOptions(Options):
    """How training reads its text and turns sentences into examples."""

    lowercase: bool = option(False, "lowercase the text (and the tokenizer)")
    max_length: int = option(64, "longest sentence in tokens, BOS and EOS included")
    overlong: Literal["drop", "truncate"] = option(
        "drop", "what to do with sentences longer than --max-length: drop them, or truncate them (keeping EOS)")
    streaming: bool = option(False, "read the corpus lazily, for corpora larger than memory (needs --max-steps)")
    validation_fraction: float = option(
        0.05, "share of train carved off as the validation split when the data has none (0: no validation)")
    max_validation_sentences: int = option(
        5000, "streams only: validate on the first N validation sentences (a stream is re-read at each evaluation)")

    ranges: ClassVar[dict] = {"max_length": (3, None, "int"), "validation_fraction": RATE,
                              "max_validation_sentences": POSITIVE}


@dataclass
class TokenizerOptions(Options):
    """The vocabulary a new model is trained with (a fine-tuned model keeps its own, extended when asked; a resumed run
    keeps the run's)."""

    tokenizer: Literal["word", "bpe", "unigram"] = option(
        "bpe", "bpe: byte-level BPE, which never produces an unknown token (any text); word: whitespace-separated "
        "words, for pre-tokenized corpora such as PTB (words outside the vocabulary become <unk>); unigram: "
        "SentencePiece-style unigram")
    vocab_size: int = option(10000, "largest vocabulary, the 4 special tokens included")
    min_frequency: int = option(1, "leave out words (or merges) seen fewer times (also for --extend-vocabulary)")
    extend_vocabulary: int = option(
        0, "fine-tuning a word-level model (--init-from): add up to N of the words of the new training data that its "
        "vocabulary lacks, most frequent first, and grow the embedding and output layers (0: keep the vocabulary)")

    ranges: ClassVar[dict] = {"vocab_size": (5, None, "int"), "min_frequency": COUNT, "extend_vocabulary": COUNT}


@dataclass
class ModelOptions(Options):
    """The model to train; an option left at None takes SentenceMIMConfig's default (or, with --init-from, the
    trained model's value)."""

    init_from: str | None = option(
        None, "fine-tune this trained model folder: its tokenizer and architecture are kept")
    objective: Literal["mim", "vae", "ae"] | None = option(
        None, "mim: sentenceMIM; vae: text VAE; ae: deterministic auto-encoder (default: mim)")
    architecture: Literal["gru", "transformer"] | None = option(None, "encoder and decoder (default: gru)")
    latent_size: int | None = option(None, "dimension of z (default: 128)")
    hidden_size: int | None = option(None, "GRU state size or Transformer width (default: 512)")
    embedding_size: int | None = option(None, "token embedding width (default: 300)")
    num_layers: int | None = option(None, "GRU layers or Transformer blocks, each of encoder and decoder (default: 1)")
    num_attention_heads: int | None = option(None, "Transformer attention heads (default: 4)")
    dropout: float | None = option(None, "dropout on embeddings and decoder outputs (default: 0)")
    embedding_dropout: float | None = option(
        None, "extra dropout on the decoder's input embeddings, the sentenceMIM demo's (default: 0)")
    word_dropout: float | None = option(
        None, "rate of decoder input words replaced by UNK in training, Bowman et al. (default: 0)")
    tie_word_embeddings: bool | None = option(None, "tie the output layer to the token embedding (default: false)")
    reverse_input: bool | None = option(None, "the GRU encoder reads each sentence backwards (default: false)")
    num_memory_slots: int | None = option(
        None, "z becomes this many memory vectors that the Transformer's or the backbone's decoder attends to "
        "(default: 4)")
    backbone: str | None = option(
        None, "start from this pretrained Hugging Face LM, a Hub id or a local folder: an encoder-decoder (BART, T5, "
        "...) or a decoder-only LM (GPT-2, Llama, Qwen2, ...). Its tokenizer is used (adapted, saved with the model) "
        "and it sets the model's sizes (docs/backbones.md)")
    freeze_backbone: bool | None = option(
        None, "train only the latent layers; the backbone's weights stay as they are (default: false)", flag=True)
    backbone_pooling: Literal["mean", "weighted_mean", "last"] | None = option(
        None, "how the backbone's final states become the posterior's input (default: mean for an encoder-decoder, "
        "weighted_mean for a decoder-only LM)")
    lora_r: int | None = option(
        None, "fine-tune the backbone through LoRA adapters of this rank (peft); its own weights stay, the latent "
        "layers train in full, and the published model has the adapters merged in (default: no LoRA)")
    lora_alpha: int | None = option(
        None, f"LoRA scaling: the adapters' update is lora_alpha / lora_r x B A (default: {LORA_ALPHA})")
    lora_dropout: float | None = option(None, f"dropout on the LoRA adapters' input (default: {LORA_DROPOUT:g})")
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": (
        "names of the backbone's modules LoRA adapts (default: peft's for the backbone's model type, e.g. q_proj "
        "v_proj for Llama and BART, c_attn for GPT-2)")})

    ranges: ClassVar[dict] = {
        **dict.fromkeys(("latent_size", "hidden_size", "embedding_size", "num_layers", "num_attention_heads",
                         "num_memory_slots", "lora_r", "lora_alpha"), POSITIVE),
        **dict.fromkeys(("dropout", "embedding_dropout", "word_dropout", "lora_dropout"), RATE),
    }

    def __post_init__(self):
        super().__post_init__()
        if self.backbone is not None:
            if self.init_from:
                raise ValueError("--backbone and --init-from exclude each other: a trained model keeps its backbone "
                                 "(drop --backbone to fine-tune it)")
            decided = [name for name in BACKBONE_DECIDES if getattr(self, name) is not None]
            if decided:
                raise ValueError(f"--{decided[0].replace('_', '-')} with --backbone: the backbone sets the model's "
                                 "sizes and dropout (its own config); drop the option")
        elif not self.init_from:
            needs_backbone = [name for name in ("freeze_backbone", "backbone_pooling", "lora_r")
                              if getattr(self, name)]
            if needs_backbone:
                raise ValueError(f"--{needs_backbone[0].replace('_', '-')} needs a pretrained backbone: pass "
                                 "--backbone NAME_OR_PATH (or --init-from a model trained from one)")
        lora_settings = [name for name in LORA_OPTIONS[1:] if getattr(self, name) is not None]
        if lora_settings and self.lora_r is None:
            raise ValueError(f"--{lora_settings[0].replace('_', '-')} without --lora-r: LoRA is off; pass --lora-r "
                             "RANK to fine-tune through LoRA adapters")

    def config_fields(self) -> dict:
        """The SentenceMIMConfig fields given (not None)."""
        return {name: value for name, value in dataclasses.asdict(self).items()
                if name not in NOT_CONFIG_FIELDS and value is not None}

    def lora_settings(self) -> dict | None:
        """add_lora's keyword arguments (r, alpha, dropout, target_modules), or None without --lora-r."""
        if self.lora_r is None:
            return None
        return {"r": self.lora_r, "alpha": LORA_ALPHA if self.lora_alpha is None else self.lora_alpha,
                "dropout": LORA_DROPOUT if self.lora_dropout is None else self.lora_dropout,
                "target_modules": self.lora_target_modules}


# With --backbone these come from the backbone's own config, so the command line may not set them.
BACKBONE_DECIDES = ("architecture", "hidden_size", "embedding_size", "num_layers", "num_attention_heads", "dropout",
                    "embedding_dropout", "tie_word_embeddings", "reverse_input")
LORA_OPTIONS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
# ModelOptions that are not SentenceMIMConfig fields: where the model comes from, and how it is fine-tuned.
NOT_CONFIG_FIELDS = ("init_from", "backbone", *LORA_OPTIONS)


@dataclass
class TrainingOptions(Options):
    """How to train: the loop, its schedules, checkpoints and logs."""

    output_dir: str = option(help="folder of the run: the best model, checkpoints/, log.jsonl")
    overwrite: bool = option(
        False, "replace the earlier run in --output-dir (deletes only files a run wrote; refuses a folder holding "
        "others)", aliases=("--overwrite_output_dir", "--overwrite-output-dir"))
    resume: bool = option(
        False, "continue the run in --output-dir exactly from its last checkpoint: the same command plus --resume. "
        "Any other change of the data, tokenizer, model or training options, or of the number of processes, is "
        "refused. May change: --logging-steps, --save-steps, --save-total-limit, --report-to, --cpu, "
        "--disable-tqdm; --max-steps and --epochs (not with --lr-scheduler cosine); --eval-steps and "
        "--eval-batch-size (not with --lr-scheduler plateau or --early-stopping-patience > 0)",
        aliases=("--resume_from_checkpoint", "--resume-from-checkpoint"))
    batch_size: int = option(
        32, "sentences per batch, per process", aliases=("--per_device_train_batch_size",
                                                          "--per-device-train-batch-size"))
    eval_batch_size: int = option(
        128, "sentences per validation batch",
        aliases=("--per_device_eval_batch_size", "--per-device-eval-batch-size"))
    max_steps: int | None = option(None, "optimizer steps; overrides --epochs")
    epochs: float = option(1.0, "passes over the training split", aliases=("--num_train_epochs", "--num-train-epochs"))
    learning_rate: float = option(1e-3, "peak learning rate")
    optimizer: Literal["adam", "adamw"] = option("adam", "Adam, or AdamW (decoupled weight decay)")
    weight_decay: float = option(0.0, "weight decay")
    max_grad_norm: float = option(5.0, "clip the gradient's global norm to this")
    lr_scheduler: Literal["constant", "cosine", "plateau"] = option(
        "constant", "constant or cosine decay after --warmup-steps (transformers' schedules), or plateau: times "
        "--plateau-factor after --plateau-patience evaluations without improvement (no warmup)",
        aliases=("--lr_scheduler_type", "--lr-scheduler-type"))
    warmup_steps: int = option(0, "steps of linear learning-rate warmup from 0")
    plateau_factor: float = option(0.25, "plateau: learning-rate factor when validation stalls")
    plateau_patience: int = option(2, "plateau: evaluations without improvement before the learning rate drops")
    gradient_accumulation_steps: int = option(1, "batches per optimizer step")
    mixed_precision: Literal["no", "bf16", "fp16"] = option("no", "autocast precision (one per process)")
    eval_steps: int = option(500, "validate, and publish the model if it improved, every N steps")
    save_steps: int | None = option(
        None, "checkpoint every N steps (default: --eval-steps)", aliases=("--checkpointing_steps",
                                                                           "--checkpointing-steps"))
    save_total_limit: int = option(2, "checkpoints kept")
    logging_steps: int = option(50, "log training averages every N steps")
    early_stopping_patience: int = option(0, "stop after N evaluations without improvement; 0: never")
    seed: int = option(0, "seeds the weights, the batch order and every sample")
    report_to: Literal["none", "tensorboard"] = option("none", "also log to TensorBoard")
    cpu: bool = option(False, "train on the CPU even when a GPU is present")
    disable_tqdm: bool = option(False, "no progress bar")
    kl_schedule: Literal["constant", "linear", "logistic", "cyclical"] = option(
        "constant", "VAE: schedule of the KL weight beta_t (docs/objectives.md)")
    kl_weight: float = option(1.0, "VAE: the KL weight beta (the schedule's maximum)")
    kl_anneal_steps: int = option(10000, "VAE linear schedule: steps from 0 to --kl-weight")
    kl_logistic_k: float = option(0.0025, "VAE logistic schedule: slope k")
    kl_logistic_x0: int = option(2500, "VAE logistic schedule: midpoint step x0")
    kl_cycle_steps: int = option(10000, "VAE cyclical schedule: steps per cycle")
    kl_cycle_ratio: float = option(0.5, "VAE cyclical schedule: share of a cycle during which beta rises")
    free_bits: float = option(0.0, "VAE: KL floor per latent dimension in nats, in training (0: none)")
    mim_warmup_steps: int = option(
        0, "MIM: steps over which the weight of the two prior terms rises linearly from 0 to 1, after which the "
        "objective is the paper's (0: the paper's objective from the first step; docs/objectives.md)")

    ranges: ClassVar[dict] = {
        **dict.fromkeys(("batch_size", "eval_batch_size", "max_steps", "plateau_patience",
                         "gradient_accumulation_steps", "eval_steps", "save_steps", "save_total_limit",
                         "logging_steps", "kl_anneal_steps", "kl_cycle_steps"), POSITIVE),
        **dict.fromkeys(("warmup_steps", "early_stopping_patience", "mim_warmup_steps"), COUNT),
        **dict.fromkeys(("epochs", "learning_rate", "max_grad_norm"), (("above", 0), None, "float")),
        **dict.fromkeys(("weight_decay", "kl_weight", "kl_logistic_k", "free_bits"), (0, None, "float")),
        **dict.fromkeys(("plateau_factor", "kl_cycle_ratio"), (("above", 0), 1, "float")),
        "kl_logistic_x0": (None, None, "int"), "seed": SEED,
    }

    def __post_init__(self):
        super().__post_init__()
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: resume continues a run, overwrite ends it")
        if self.lr_scheduler == "plateau" and self.warmup_steps:
            raise ValueError("--warmup-steps with --lr-scheduler plateau: not supported; use constant or cosine")


@dataclass
class EvaluationOptions(Options):
    """How a trained model is scored on a split (docs/metrics.md)."""

    batch_size: int = option(
        64, "sentences per batch", aliases=("--per_device_eval_batch_size", "--per-device-eval-batch-size"))
    max_sentences: int | None = option(None, "score the first N sentences only")
    seed: int = option(0, "seeds every sample of the evaluation")
    output: str | None = option(
        None, "write every metric to this JSON file (the benchmark's result keys)",
        aliases=("--output_file", "--output-file"))
    disable_tqdm: bool = option(False, "no progress bar")

    ranges: ClassVar[dict] = {"batch_size": POSITIVE, "max_sentences": POSITIVE, "seed": SEED}


@dataclass
class LikelihoodOptions(Options):
    iw_samples: int = option(500, "importance samples K of IW-NLL (0 skips it)")
    width_sentences: int = option(
        200, "held-out sentences on which the widened IW proposal's width is chosen: the first N of the validation "
        "split (of train when validation is scored); 0 skips the widened IW-NLL")

    ranges: ClassVar[dict] = {"iw_samples": COUNT, "width_sentences": COUNT}


@dataclass
class PlotOptions(Options):
    plots: str | None = option(None, "write PNG plots (latent projection, KL per dimension, ...) into this folder")


@dataclass
class ModelFolderOptions(Options):
    """A trained model folder (the recipes; the CLI takes it as its first argument)."""

    model_name_or_path: str = option(help="folder with the model and its tokenizer")
    device: str | None = option(None, "where to run: cpu, cuda, cuda:1, ... (default: a GPU if there is one)")

    def torch_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TestEvaluationOptions(Options):
    """After training (recipes/train.py, the benchmark): score the best model on a test split."""

    test_split: str = option("test", "split the trained model is scored on ('' skips it)")
    iw_samples: int = option(50, "importance samples K of IW-NLL (0 skips it)")
    width_sentences: int = option(
        200, "validation sentences on which the widened IW proposal's width is chosen (0 skips the widened IW-NLL)")
    max_eval_sentences: int | None = option(None, "score the first N test sentences only")

    ranges: ClassVar[dict] = {"iw_samples": COUNT, "max_eval_sentences": POSITIVE, "width_sentences": COUNT}


@dataclass
class TextInputOptions(Options):
    """Sentences from a file, besides those given as arguments."""

    input: str | None = option(None, "a UTF-8 text file with one sentence per line")


@dataclass
class ReconstructOptions(Options):
    mode: Literal["mean", "sample", "perturb"] = option(
        "mean", "decode the posterior mean, a posterior sample, or the mean plus a little noise")
    num_beams: int = option(1, "beam search with this many beams (1: greedy)")

    ranges: ClassVar[dict] = {"num_beams": POSITIVE}


@dataclass
class InterpolateOptions(Options):
    steps: int = option(8, "points strictly between the two sentences")
    method: Literal["linear", "slerp"] = option("linear", "straight line, or spherical interpolation")

    ranges: ClassVar[dict] = {"steps": COUNT}


@dataclass
class SampleOptions(Options):
    num_samples: int = option(10, "sentences to sample", aliases=("-n",))
    temperature: float = option(1.0, "token sampling temperature (0: greedy)")
    seed: int | None = option(None, "seed of the latents and the tokens (default: fresh randomness)")
    prior: Literal["standard", "aggregate"] = option(
        "standard", "where the latent codes come from: standard, N(0, I); aggregate, the Gaussian fitted to the "
        "training codes after training (aggregate_posterior.safetensors; what works for sMIM, whose codes sit near "
        "the origin where N(0, I) samples never go)")
    repetition_penalty: float = option(1.0, "divide the logits of tokens already in the sentence by this (1: off)")
    no_repeat_ngram_size: int = option(0, "never repeat an n-gram of this size within a sentence (0: off)")

    ranges: ClassVar[dict] = {"num_samples": POSITIVE, "temperature": (0, None, "float"), "seed": SEED,
                              "repetition_penalty": (("above", 0), None, "float"), "no_repeat_ngram_size": COUNT}


@dataclass
class EncodeOptions(Options):
    output: str = option(help="where to write the [N, latent] float32 array (.npy)")


# -- resuming ---------------------------------------------------------------------------------------------------------

# May differ on resume: they cannot change the weights the run ends with.
RESUME_MAY_CHANGE = {"output_dir", "resume", "overwrite", "cpu", "disable_tqdm", "report_to", "logging_steps",
                     "save_steps", "save_total_limit"}
RESUME_LENGTH = {"max_steps", "epochs"}  # ... unless the cosine schedule decays over the run's length
RESUME_EVALUATION = {"eval_steps", "eval_batch_size"}  # ... unless evaluations steer training


def check_resume(saved: dict, current: dict, training: TrainingOptions, source) -> None:
    """Refuse, naming the option with its old and new values, a resume whose options would change the run.
    `saved` and `current` map option names to values (run_options.json, and this command's)."""
    steered = training.lr_scheduler == "plateau" or training.early_stopping_patience > 0
    for name in sorted(saved, key=lambda name: name in RESUME_LENGTH | RESUME_EVALUATION):  # plain refusals first
        old, new = saved[name], current.get(name, saved[name])
        if new == old or name in RESUME_MAY_CHANGE:
            continue
        if name in RESUME_LENGTH and training.lr_scheduler != "cosine":
            continue
        if name in RESUME_EVALUATION and not steered:
            continue
        why = ("the cosine schedule decays over the run's length" if name in RESUME_LENGTH else
               "evaluations steer this run (plateau schedule or early stopping)" if name in RESUME_EVALUATION else
               "it would change the run")
        raise ValueError(
            f"--resume: option {name} was {old!r} when this run started ({source}), now {new!r}: {why}; resume with "
            f"{old!r}, or train into another output folder"
        )
