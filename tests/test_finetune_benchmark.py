"""benchmarks/finetune.py on tiny stand-ins for PTB and WikiText-2: every model trains, every row is scored, and the
old-rule BLEU (<unk> matching <unk>) is never below the one that cannot flatter."""

import pytest

from benchmarks import finetune

pytestmark = pytest.mark.usefixtures("quiet_progress_bars")

PTB = ["the company said it expects <unk> growth", "prices rose sharply in tokyo", "the market fell N points",
       "mr. <unk> is chairman of the board", "the dollar rose against the yen"] * 8
WIKITEXT = ["The Zebra sat on the mat . A yak ran in the <unk> park . It weighs 0 @.@ 7 kg .",
            "The company said it expects growth . Prices rose in Tokyo ."] * 10 + [
            "It rained in Tokyo all day . " * 10] * 2  # a paragraph over --max-length 64: dropped unless split


def test_quick_run_scores_every_model(tmp_path):
    ptb, wikitext = tmp_path / "ptb", tmp_path / "wikitext"
    ptb.mkdir()
    wikitext.mkdir()
    for split in ("train", "valid", "test"):
        (ptb / f"ptb.{split}.txt").write_text("\n".join(PTB) + "\n")
    for name in ("valid.txt", "test.txt"):
        (wikitext / name).write_text("\n".join(WIKITEXT) + "\n")
    results = finetune.main(["--quick", "--base", "ptb", "--base-data", str(ptb), "--wikitext", str(wikitext),
                             "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "out"), "--extend", "3"])
    rows = {row["model"]: row for row in results["rows"]}
    assert list(rows) == ["base (own domain: PTB test)", "base, not fine-tuned", "fine-tuned, paragraphs",
                          "fine-tuned", "fine-tuned + extended", "scratch BPE", "scratch word"]
    assert rows["fine-tuned + extended"]["vocabulary_size"] == rows["fine-tuned"]["vocabulary_size"] + 3
    assert rows["fine-tuned + extended"]["unknown_token_rate"] < rows["fine-tuned"]["unknown_token_rate"]
    assert rows["scratch BPE"]["unknown_token_rate"] == rows["scratch BPE"]["unknown_token_rate_in_text"] > 0
    assert rows["base, not fine-tuned"]["likelihoods_flagged"] and not rows["scratch BPE"]["likelihoods_flagged"]
    assert all(row["bleu4_corpus_unknown_matches"] >= row["bleu4_corpus"] for row in rows.values())
    # the length rule: the base saved 32, every model trained on WikiText-2 the 64 it trained with
    assert rows["base, not fine-tuned"]["saved_max_position_embeddings"] == 32
    assert {rows[name]["saved_max_position_embeddings"] for name in list(rows)[2:]} == {64}
    # each run's data line: paragraphs are one row each, split into sentences only with --split-sentences
    assert "split into" not in " ".join(rows["fine-tuned, paragraphs"]["printed"])
    assert "split into" in " ".join(rows["fine-tuned"]["printed"])
    assert any(line.startswith("vocabulary extended by 3 words") for line in rows["fine-tuned + extended"]["printed"])
    assert rows["fine-tuned"]["reconstructions"][0]["text"] == "The Zebra sat on the mat ."
    assert (tmp_path / "work" / "wikitext-2-valid-as-train" / "train.txt").resolve() == (wikitext / "valid.txt")
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| fine-tuned + extended |" in report and "1. text: `The Zebra sat on the mat .`" in report
    # every model shows the same test sentences, a model that dropped one says so
    on_wikitext = [row for name, row in rows.items() if not name.startswith("base (own domain")]
    shown = [item["text"] for item in rows["fine-tuned"]["reconstructions"]]
    assert all([item["text"] for item in row["reconstructions"]] == shown for row in on_wikitext)
    assert all(row["num_sentences"] + row["num_dropped"] == 12 for row in on_wikitext)
    assert any("remedies: --split-sentences" in line for line in rows["fine-tuned, paragraphs"]["warnings"])
