"""What a benchmark run is: the library's own options (data, tokenizer, model, training, test evaluation) plus the
benchmark's (which variants, which latent sizes, how many at once), and the presets that fill them.

    settings = benchmark_settings("cpu", latent_sizes=[16, 128])   # a preset; any option can be overridden

Options are those of `sentmim train` (sentmim.options), so `sentmim benchmark` takes the same flags; a preset only
changes their defaults. The variants fix the objective and the KL schedule of each model, so --objective,
--latent-size, --kl-schedule and --init-from are refused here. With --backbone every model starts from that
pretrained LM, whose config sets the sizes: the preset's GRU sizes are left out.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

from sentmim.options import (
    BACKBONE_DECIDES,
    DataOptions,
    DatasetOptions,
    ModelOptions,
    TestEvaluationOptions,
    TokenizerOptions,
    TrainingOptions,
    check_ranges,
    option,
)

MODEL_VARIANTS = {
    "mim": "sMIM",
    "mim-warmup": "sMIM + warm-up",
    "vae": "sVAE, beta = 1",
    "vae-logistic": "sVAE, logistic KL annealing",
    "vae-cyclical": "sVAE, cyclical KL annealing + free bits",
    "ae": "AE",
}
Variant = Literal["mim", "mim-warmup", "vae", "vae-logistic", "vae-cyclical", "ae"]
# The sentenceMIM demo's logistic schedule: beta(0) = 1 / (1 + exp(k * x0)) with k * x0 = 0.0025 * 2500.
LOGISTIC_K_TIMES_X0 = 0.0025 * 2500


def comma_separated_ints(text: str) -> list[int]:
    """'16,128' -> [16, 128]: a list option also accepts one comma-separated word."""
    return [int(part) for part in text.split(",") if part]


def comma_separated_words(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def flattened(values) -> list:
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


@dataclass
class BenchmarkOptions:
    """Which models the benchmark trains, and how many at once."""

    objectives: list[comma_separated_words] = field(
        default_factory=lambda: list(MODEL_VARIANTS),
        metadata={"help": f"models to train, from {', '.join(MODEL_VARIANTS)} ('a b' or 'a,b')"})
    latent_sizes: list[comma_separated_ints] = field(
        default_factory=lambda: [16, 128, 512], metadata={"help": "latent sizes ('16 128 512' or '16,128,512')"})
    scale_schedules: bool = option(
        False, "scale the annealing schedules to --max-steps: logistic midpoint at half the run, four KL cycles")
    num_examples: int = option(5, "test sentences reconstructed in samples.md (and samples shown per model)")
    quality_samples: int = option(
        500, "sentences decoded from each prior (N(0, I) and the aggregate posterior) to measure sample quality")
    interpolation_steps: int = option(6, "points between two test sentences in samples.md")
    num_threads: int | None = option(None, "torch threads per model (1 is fastest for small models on a CPU)")
    num_workers: int = option(1, "models trained at once, each in its own process (CPU: one per core, 1 thread)")

    def __post_init__(self):
        self.objectives, self.latent_sizes = flattened(self.objectives), flattened(self.latent_sizes)
        unknown = [name for name in self.objectives if name not in MODEL_VARIANTS]
        if unknown or not self.objectives:
            raise ValueError(f"--objectives {' '.join(self.objectives)}: choose from {', '.join(MODEL_VARIANTS)}")
        if not self.latent_sizes or min(self.latent_sizes) < 1:
            raise ValueError(f"--latent-sizes {self.latent_sizes}: need integers >= 1")
        check_ranges(self, {"num_examples": (0, None, "int"), "interpolation_steps": (0, None, "int"),
                            "quality_samples": (1, None, "int"),
                            "num_threads": (1, None, "int"), "num_workers": (1, None, "int")})


OPTION_CLASSES = (BenchmarkOptions, DatasetOptions, DataOptions, TokenizerOptions, ModelOptions, TrainingOptions,
                  TestEvaluationOptions)
# Set by each variant (or each run), never by the command line.
VARIANT_FIELDS = ("objective", "latent_size", "init_from", "kl_schedule", "kl_weight")
# Pick which models run, where and how fast, not what a model is: they may change when a benchmark is continued.
SELECTION_FIELDS = ("objectives", "latent_sizes", "num_threads", "num_workers", "cpu", "output_dir", "overwrite",
                    "resume", "disable_tqdm")

# The benchmark's defaults where they differ from sentmim train's: PTB-style word vocabulary, the demo's free bits.
DEFAULTS = dict(tokenizer="word", free_bits=0.5, iw_samples=500)
# PTB on a 2-core CPU in about 45 minutes for 5 objectives x 3 latent sizes, scoring included: two models at a time,
# one per core at one thread (~0.15 s/step each on a 2.8 GHz Xeon), 2,000 steps (about one epoch at batch 20) plus
# ~30 s of scoring per model. sMIM's decoder needs thousands of steps to read its posterior means
# (benchmarks/vae_collapse/): this is a budget comparison, not a converged model (see the paper preset). The
# annealing schedules are the demo's shapes compressed into the budget.
CPU_PRESET = dict(
    dataset="../shared/data/ptb", max_length=64, max_validation_sentences=500, max_eval_sentences=500,
    embedding_size=128, hidden_size=256, tie_word_embeddings=True, batch_size=20, learning_rate=2e-3,
    max_steps=2000, eval_steps=400, logging_steps=50, scale_schedules=True, iw_samples=10, num_threads=1,
    # The warm-up, measured (benchmarks/vae_collapse/): over 1,000 steps sMIM reached 0.98x / 0.87x the AE's BLEU-4
    # at latents 128 / 512, over 1,500 steps 1.01x / 1.02x (at latent 16 the paper's objective is the better one).
    num_workers=2, mim_warmup_steps=1500,
)
PRESETS = {
    # Tiny and quick: the integration test (about a minute on 2 cores), on the built-in corpus.
    "smoke": dict(
        dataset="builtin", max_length=24, vocab_size=800, max_validation_sentences=64, max_eval_sentences=48,
        latent_sizes=[4, 8], embedding_size=16, hidden_size=32, batch_size=16, learning_rate=2e-3, max_steps=12,
        eval_steps=6, logging_steps=3, scale_schedules=True, eval_batch_size=48, iw_samples=4, num_examples=2,
        interpolation_steps=3, num_threads=1, width_sentences=16, quality_samples=16, mim_warmup_steps=6,
    ),
    "cpu": CPU_PRESET,
    # The cpu preset with one Transformer block each side (embedding 128, hidden 256, 4 heads), in about 45 minutes
    # on 2 cores: a step costs ~1.4x a GRU step, so 1,500 steps. Without a learning-rate warm-up the Transformer
    # learns nothing a code could carry in this budget (Adam 2e-3, constant: validation -log p(x|z) 151 -> 148 nats
    # in 1,000 steps; with a 200-step warm-up at 1e-3, 151 -> 124; benchmarks/vae_collapse/).
    "cpu-transformer": dict(
        CPU_PRESET, architecture="transformer", learning_rate=1e-3, warmup_steps=200, lr_scheduler="cosine",
        max_steps=1500, eval_steps=300, mim_warmup_steps=750,  # half the run; not tuned (no model reconstructs)
    ),
    # The sentenceMIM demo's configuration (a GPU job): GRU 512, embedding 300, batch 20, Adam 1e-3, up to 200
    # epochs with the learning rate x0.25 on plateau and early stopping (so runs may stop at different steps);
    # like the demo's published runs: dropout 0.5 on the decoder's input embeddings, the encoder reading each
    # sentence backwards, gradients clipped at norm 0.25.
    "paper": dict(
        dataset="../shared/data/ptb", max_length=100, embedding_size=300, hidden_size=512, batch_size=20,
        learning_rate=1e-3, epochs=200, lr_scheduler="plateau", early_stopping_patience=5, eval_steps=2100,
        logging_steps=100, kl_logistic_k=0.0025, kl_logistic_x0=2500, kl_cycle_steps=10000, iw_samples=500,
        eval_batch_size=64, embedding_dropout=0.5, reverse_input=True, max_grad_norm=0.25,
        mim_warmup_steps=1500,  # the cpu preset's measured value (same batch); not measured at this size
    ),
}


@dataclass
class BenchmarkSettings:
    """Everything a benchmark run depends on, one option dataclass each. training.output_dir is the benchmark's
    folder (each model trains into models/<name>/ below it)."""

    benchmark: BenchmarkOptions
    dataset: DatasetOptions
    data: DataOptions
    tokenizer: TokenizerOptions
    model: ModelOptions
    training: TrainingOptions
    test: TestEvaluationOptions

    def __post_init__(self):
        given = [name for name in VARIANT_FIELDS if self.flat()[name] != field_default(name)]
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            raise ValueError(f"{flags}: the benchmark's variants set these; choose models with --objectives and "
                             "--latent-sizes")
        if self.benchmark.scale_schedules and self.training.max_steps is None:
            raise ValueError("--scale-schedules scales the annealing schedules to --max-steps: give --max-steps")

    def flat(self) -> dict:
        """Every option by name (names are unique across the dataclasses), as JSON values."""
        values = {}
        for part in dataclasses.fields(self):
            values.update(dataclasses.asdict(getattr(self, part.name)))
        return json.loads(json.dumps(values))

    def schedule_of(self, variant: str) -> dict:
        """The training options a variant changes: its KL schedule, free bits for the cyclical one, and the MIM
        warm-up (the paper's objective, none, for "mim"; --mim-warmup-steps for "mim-warmup")."""
        training, steps = self.training, self.training.max_steps
        x0, k, cycle = training.kl_logistic_x0, training.kl_logistic_k, training.kl_cycle_steps
        if self.benchmark.scale_schedules:  # the same shapes, compressed into the budget
            x0 = max(1, steps // 2)
            k, cycle = LOGISTIC_K_TIMES_X0 / x0, max(1, steps // 4)
        schedules = {
            "mim": dict(mim_warmup_steps=0),
            "mim-warmup": dict(mim_warmup_steps=training.mim_warmup_steps),
            "vae": dict(kl_schedule="constant", kl_weight=1.0, free_bits=0.0),
            "vae-logistic": dict(kl_schedule="logistic", kl_logistic_k=k, kl_logistic_x0=x0, free_bits=0.0),
            "vae-cyclical": dict(kl_schedule="cyclical", kl_cycle_steps=cycle),
        }
        return schedules.get(variant, {})


def field_default(name: str):
    """The benchmark's default of an option (before any preset)."""
    if name in DEFAULTS:
        return DEFAULTS[name]
    for options in OPTION_CLASSES:
        for item in dataclasses.fields(options):
            if item.name == name:
                return item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
    raise KeyError(name)


def benchmark_settings(preset: str = "cpu", output_dir: str = "runs/benchmark", **overrides) -> BenchmarkSettings:
    """The preset's settings with `overrides` (option names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: choose from {', '.join(PRESETS)}")
    preset_values = {**DEFAULTS, **PRESETS[preset]}
    values = {**preset_values, **overrides, "output_dir": str(output_dir)}
    if values.get("backbone"):  # the backbone sets these: the preset's values do not apply (others are refused)
        for name in BACKBONE_DECIDES:
            if name in values and values[name] == preset_values.get(name, field_default(name)):
                values[name] = None
    known = {item.name for options in OPTION_CLASSES for item in dataclasses.fields(options)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown benchmark settings: {', '.join(sorted(unknown))}")
    parts = [options(**{item.name: values[item.name] for item in dataclasses.fields(options) if item.name in values})
             for options in OPTION_CLASSES]
    return BenchmarkSettings(*parts)
