"""The wiring bugs of issue #14, and of the code #15 rewrote, planted one at a time in a throw-away copy of the
repository: for each, the tests that must now fail are run and must fail, and the tests that existed before them
are run and reported.

    .venv/bin/python benchmarks/mutation/planted_bugs.py              # the current tree
    .venv/bin/python benchmarks/mutation/planted_bugs.py --old-tests  # also show that the old suite missed each

Prints one line per bug: the bug, whether the new tests fail on it (they must), and with --old-tests whether the
files that existed before the new tests caught it. Exits 1 if a bug goes unnoticed by the new tests.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLD_TESTS = ["tests/test_training.py", "tests/test_training_options.py", "tests/test_objectives.py",
             "tests/test_modeling.py", "tests/test_generation.py", "tests/test_pipeline.py", "tests/test_cli.py",
             "tests/test_evaluation.py", "tests/test_recipes_eval.py"]

# (bug, file, text, replacement, tests that must fail)
BUGS = [
    ("training passes kl_weight=None instead of beta_t", "sentmim/training.py",
     "out = self.model(**batch, kl_weight=self.kl_weight,", "out = self.model(**batch, kl_weight=None,",
     ["tests/test_wiring_training.py::test_beta_logged_and_applied_at_each_step_is_the_schedules_value"]),
    ("free bits never applied in training", "sentmim/training.py",
     "kl_weight=self.kl_weight, free_bits=options.free_bits,", "kl_weight=self.kl_weight,",
     ["tests/test_wiring_training.py::test_free_bits_floor_the_training_loss_and_not_the_validation_loss"]),
    ("validation KL averaged per batch instead of summed", "sentmim/training.py",
     'totals["kl"] += out.kl.sum().item()', 'totals["kl"] += out.kl.mean().item()',
     ["tests/test_wiring_training.py::test_logged_validation_equals_the_metrics_on_the_same_loader"]),
    ("gradient clipping removed", "sentmim/training.py",
     "accelerator.clip_grad_norm_(self.model.parameters(), options.max_grad_norm)", "pass",
     ["tests/test_wiring_training.py::test_gradient_clipping_matches_a_hand_written_clip"]),
    ("sampling ignores the temperature", "sentmim/generation.py",
     "logits = filter_logits(logits / temperature, top_k, top_p)", "logits = filter_logits(logits, top_k, top_p)",
     ["tests/test_wiring_generation.py::test_first_token_frequencies_follow_softmax_of_logits_over_temperature"]),
    ("beam search ignores the length penalty", "sentmim/generation.py",
     "return beam_search(model, z, max_length, num_beams, length_penalty)",
     "return beam_search(model, z, max_length, num_beams)",
     ["tests/test_wiring_generation.py::test_beam_search_with_enough_beams_equals_exhaustive_search"]),
    ("prior sampling ignores latent_temperature", "sentmim/pipeline.py",
     "return z * latent_temperature", "return z",
     ["tests/test_wiring_pipeline.py::test_prior_samples_have_the_latent_temperature_as_standard_deviation"]),
    ("sentmim evaluate drops IW-NLL (iw_samples forced to 0)", "sentmim/cli.py",
     "iw_samples=likelihood.iw_samples,", "iw_samples=0,",
     ["tests/test_cli_evaluate.py::test_every_printed_metric_is_the_librarys_on_the_same_data"]),
    ("mixed precision ignored", "sentmim/training.py",
     "mixed_precision=options.mixed_precision,", 'mixed_precision="no",',
     ["tests/test_training_options.py::test_bf16_mixed_precision_trains_on_a_cpu"]),
    ("a streamed corpus not split between processes", "sentmim/training.py",
     "split = split_dataset_by_node(split, accelerator.process_index, accelerator.num_processes)",
     "pass",
     ["tests/test_wiring_distributed.py::test_two_processes_read_disjoint_parts_of_a_stream"]),
    ("per-process batch size halved under two processes", "sentmim/training.py",
     "make_dataloader(split, options.batch_size,",
     "make_dataloader(split, options.batch_size // accelerator.num_processes,",
     ["tests/test_training.py::test_two_processes_on_cpu"]),
    # The wiring that issue #15's slimming rewrote (the Options base class, shared helpers, moved code)
    ("TrainingOptions skips the shared range check", "sentmim/options.py",
     "    def __post_init__(self):\n        super().__post_init__()\n        if self.resume and self.overwrite:",
     "    def __post_init__(self):\n        if self.resume and self.overwrite:",
     ["tests/test_bad_input.py::test_train_states_the_valid_range_before_reading_data"]),
    ("ModelOptions skips the shared range check", "sentmim/options.py",
     "    def __post_init__(self):\n        super().__post_init__()\n        if self.backbone is not None:",
     "    def __post_init__(self):\n        if self.backbone is not None:",
     ["tests/test_backbone_runs.py::test_option_combinations_that_cannot_work_are_refused"]),
    ("SampleOptions' ranges table not read", "sentmim/options.py",
     '    ranges: ClassVar[dict] = {"num_samples": POSITIVE,',
     '    ranges_: ClassVar[dict] = {"num_samples": POSITIVE,',
     ["tests/test_bad_input.py::test_text_commands_state_the_valid_range"]),
    ("--lora-dropout not passed on to add_lora", "sentmim/options.py",
     '"dropout": LORA_DROPOUT if self.lora_dropout is None else self.lora_dropout,', '"dropout": LORA_DROPOUT,',
     ["tests/test_backbone_runs.py::test_every_backbone_flag_reaches_the_model_options"]),
    ("checkpoint folders sorted by name", "sentmim/checkpointing.py",
     "    return sorted(found, key=checkpoint_step)", "    return sorted(found)",
     ["tests/test_resume_safety.py::test_nothing_to_resume_names_the_newest_partial_checkpoint_by_step_number"]),
    ("aggregate posterior fitted in train mode", "sentmim/aggregate_posterior.py",
     "    with eval_mode(model):\n", "    if True:\n",
     ["tests/test_aggregate_posterior.py::test_fit_from_a_model_encodes_in_eval_mode_and_is_stored_beside_it"]),
    ("widened IW-NLL keys dropped from the results", "sentmim/evaluation.py",
     '        **nll_and_ppl("iw_nll_wide"),\n', "",
     ["tests/test_evaluation.py::test_the_widened_iw_nll_takes_its_width_from_the_heldout_sentences_only"]),
    ("checkpoint full-disk error loses its reassurance", "sentmim/checkpointing.py",
     'full_disk_as_oserror(f"checkpoint {folder}", " (the previous checkpoint is intact)")',
     'full_disk_as_oserror(f"checkpoint {folder}")',
     ["tests/test_untrusted_model_folder.py::test_disk_full_during_a_checkpoint"]),
    ("the pipeline drops the latent mode", "sentmim/pipeline.py",
     '(("mode", mode), ("noise", noise))', '(("noise", noise),)',
     ["tests/test_transformers_pipeline.py::test_the_latent_mode_and_noise_reach_the_model"]),
]


def pytest_fails(workdir: Path, tests: list[str]) -> bool:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=workdir, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pytest could not run {tests}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.returncode == 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-tests", action="store_true", help="also run the test files that predate the new ones")
    args = parser.parse_args(argv)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    unnoticed = 0
    with tempfile.TemporaryDirectory(prefix="sentmim-planted-") as temporary:
        workdir = Path(temporary)
        for name in filter(None, listed):
            if (ROOT / name).is_file():
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, workdir / name)
        for bug, file, text, replacement, tests in BUGS:
            source = (workdir / file).read_text()
            if source.count(text) != 1:
                raise RuntimeError(f"{file}: cannot plant '{bug}': the code changed")
            (workdir / file).write_text(source.replace(text, replacement))
            try:
                caught = pytest_fails(workdir, tests)
                line = f"{bug:<58} new tests {'FAIL (caught)' if caught else 'PASS (missed!)'}"
                if args.old_tests:
                    line += f"; old suite {'caught it' if pytest_fails(workdir, OLD_TESTS) else 'missed it'}"
            finally:
                (workdir / file).write_text(source)
            unnoticed += not caught
            print(line, flush=True)
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
