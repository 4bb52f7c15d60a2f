"""benchmarks/ablations.py switches each of issue #17's changes off and back on, and measures paired steps."""

import torch

from benchmarks import ablations
from sentmim import SentenceMIMModel, modeling


def test_each_ablation_keeps_the_loss_and_is_undone(tiny_config, batch):
    """Switching a change off computes the same loss (the changes are exact), and leaving restores the library."""
    torch.manual_seed(0)
    model = SentenceMIMModel(tiny_config()).double().train()
    input_ids, attention_mask = batch
    library = (modeling.run_gru, modeling.OutputLayerNLL.apply, modeling.PADDED_RUN_MAX_PADDING)

    def loss():
        torch.manual_seed(1)
        return model(input_ids, attention_mask=attention_mask, return_logits=False).loss

    expected = loss()
    for name, ablation in ablations.ABLATIONS.items():
        with ablation(model):
            torch.testing.assert_close(loss(), expected, rtol=0, atol=1e-10, msg=name)
        assert (modeling.run_gru, modeling.OutputLayerNLL.apply, modeling.PADDED_RUN_MAX_PADDING) == library, name
        assert "step" not in vars(model.decoder), name


def test_tiny_run_writes_json_and_markdown(tmp_path):
    results = ablations.main(["--tiny", "--data", "builtin", "--batch-sizes", "4", "--batches", "2",
                              "--output", str(tmp_path)])
    assert {(row["ablation"], row["batch_size"]) for row in results["rows"]} == {
        (name, 4) for name in ablations.ABLATIONS}
    assert all(row["median_ratio"] > 0 for row in results["rows"])
    assert "| torch_gru | 4 |" in (tmp_path / "results.md").read_text()
