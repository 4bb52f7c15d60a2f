"""Recipe: benchmark sentenceMIM against the text VAE and an auto-encoder, posterior collapse measured side by side.

On one dataset, with one tokenizer, one architecture and one budget (steps, batch, learning rate, sizes, seed), it
trains five models at each latent size (default 16, 128, 512):

    mim            sMIM, the sentenceMIM objective
    vae            sVAE with beta = 1 from the first step
    vae-logistic   sVAE with logistic KL annealing (the sentenceMIM demo's k = 0.0025, x0 = 2500, or that shape
                   compressed into the budget)
    vae-cyclical   sVAE with cyclical KL annealing plus free bits
    ae             a deterministic auto-encoder

with `sentmim.assembly.train_from_options` (the code behind `sentmim train`), scores each best model on the test split
with every metric of docs/metrics.md, and writes into --output_dir: results.json, results.md (the table),
samples.md (reconstructions, interpolations), plots/ (KL and MI during training, active units and BLEU against latent
size, a projection of each latent space) and models/<variant>-z<latent>/ (each run). See sentmim/apps/benchmark.py.

Launch:

    # the integration test's tiny run on the built-in corpus (about a minute on 2 CPU cores)
    python recipes/benchmark_vae.py --preset smoke --output_dir runs/bench-smoke

    # PTB on a 2-core CPU, 5 objectives x latent 16/128/512: about 45 minutes with evaluation (two models at a
    # time, one thread each; GRU 256, embedding 128 tied, batch 20, 2000 steps; 500 test sentences, IW-NLL with
    # K=10). runs/ holds the models and checkpoints; publish results.md, results.json, samples.md and plots/
    # under benchmarks/. On more cores, --num_workers N trains N models at once
    OMP_NUM_THREADS=1 python recipes/benchmark_vae.py --preset cpu --dataset_name ../shared/data/ptb \
        --output_dir runs/benchmark-ptb-cpu

    # the sentenceMIM paper's configuration (GRU 512, embedding 300, batch 20, Adam 1e-3, up to 200 epochs with the
    # learning rate x0.25 on plateau, early stopping, decoder embedding dropout 0.5, reversed encoder input,
    # gradient norm clipped at 0.25; IW-NLL with K=500 on the whole test split): a GPU job
    python recipes/benchmark_vae.py --preset paper --dataset_name ../shared/data/ptb --output_dir runs/bench-paper

    # any preset setting can be overridden, e.g. fewer models and a longer budget
    python recipes/benchmark_vae.py --preset cpu --output_dir runs/bench-mim-vae --objectives mim vae \
        --latent_sizes 32 --max_steps 3000 --iw_samples 100

An interrupted benchmark continues when the same command is run again: finished models are skipped and a model
interrupted during training resumes from its last checkpoint. --overwrite_output_dir starts over. The options are
those of `sentmim benchmark` (and of `sentmim train`), in either spelling; a preset sets their defaults, so
`python recipes/benchmark_vae.py --preset cpu --help` lists them with the cpu preset's values.
"""

import logging
import shlex
import sys
from pathlib import Path

from transformers import HfArgumentParser

from sentmim.apps.benchmark import run_benchmark
from sentmim.apps.benchmark_report import format_results_table
from sentmim.apps.benchmark_settings import DEFAULTS, OPTION_CLASSES, PRESETS, BenchmarkSettings
from sentmim.training import TrainingDiverged


def build_parser(preset: str) -> HfArgumentParser:
    parser = HfArgumentParser(OPTION_CLASSES, description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu",
                        help="smoke: tiny test run; cpu: PTB in ~45 min on 2 cores; cpu-transformer: the same with "
                             "Transformers; paper: the sentenceMIM demo's")
    parser.set_defaults(**{**DEFAULTS, **PRESETS.get(preset, {})})
    return parser


def parse_args(argv: list[str]) -> tuple[str, BenchmarkSettings]:
    """(preset, settings): the preset's values, with what the command line overrides."""
    preset = next((argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--preset"), "cpu")
    *options, rest = build_parser(preset).parse_args_into_dataclasses(argv)
    return rest.preset, BenchmarkSettings(*options)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    logging.getLogger("sentmim").setLevel(logging.INFO)  # data counts and validation results of every run

    # 1. The settings: the preset, with what the command line overrides.
    preset, settings = parse_args(argv)

    # 2. Train and score every (objective, latent size) pair; the report is rewritten after each model.
    command = shlex.join(["python", "recipes/benchmark_vae.py", *argv])
    results = run_benchmark(settings, preset=preset, command=command)

    # 3. The table (also in output_dir/results.md, with what each column means).
    print(format_results_table(results["models"]))
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, TrainingDiverged) as error:  # bad data, settings, folders: one line, no traceback
        print(f"{Path(sys.argv[0]).name}: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
