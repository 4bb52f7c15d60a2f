"""benchmarks/fault_injection.py: kill -9 during training, in checkpoint writes and in the best model's publication,
resume each time; the result must equal an uninterrupted run bit for bit, and nothing half written may be visible
after any kill. The quick version forks its launches from this process (no ~5 s of imports each); the 20-kill
version launches fresh `python` processes, as a user would, and is slow (its figures: benchmarks/fault_injection/)."""

import pytest

from benchmarks import fault_injection


def assert_exact(results: dict) -> None:
    assert results["best_model_bitwise_equal"], "the best model differs from the uninterrupted run's"
    assert results["final_checkpoint_bitwise_equal"], "the final weights differ from the uninterrupted run's"
    assert results["log_equal"], "log.jsonl differs from the uninterrupted run's"
    assert results["train_results_equal"]


def test_one_kill_of_each_kind_then_resume_is_exact(tmp_path):
    results = fault_injection.run_fault_injection(tmp_path, kills=len(fault_injection.KINDS), seed=0, launch="fork",
                                                  log=lambda message: None)
    assert results["kills_by_kind"] == dict.fromkeys(fault_injection.KINDS, 1)
    assert_exact(results)


@pytest.mark.slow
def test_twenty_kills_of_fresh_processes_then_resume_is_exact(tmp_path):
    results = fault_injection.run_fault_injection(tmp_path, kills=20, seed=0, launch="exec")
    assert results["kills"] == 20
    assert_exact(results)
