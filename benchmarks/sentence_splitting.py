"""Choose the sentence segmenter behind `--split-sentences`: accuracy on gold boundaries, speed, footprint.

Candidates are offline English segmenters installable from PyPI whose rules or models ship inside the wheel
(pinned in sentence_splitting/requirements.txt; a candidate that is not installed is skipped with a message).

Gold sets (every paragraph is its gold sentences joined with one space):
  ewt            UD English-EWT test, from `# newdoc` / `# newpar` / `# text` lines (reviews, email, answers, blogs,
                 newsgroups)
  ewt-tokenized  the same sentences tokenized the way WikiText is (punctuation split off, "do n't")
  ewt-tok-lower  the same, lowercased as well
  ptb            consecutive sentences of Mikolov's PTB test set (lowercased, tokenized, no punctuation at all)
No gold: WikiText-2 valid paragraphs, for speed and for how each candidate treats tokenized Wikipedia text.

    python benchmarks/sentence_splitting.py --gold-conllu /work/.data/ud/en_ewt-ud-test.conllu \
        --ptb ../shared/data/ptb/ptb.test.txt --wikitext ../shared/data/wikitext-2/valid.txt

Prints a table; writes results.json and results.md into benchmarks/sentence_splitting/.
"""

import argparse
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).parent / "sentence_splitting"
LONG_SENTENCE_WORDS = 64  # a sentence longer than this is cut or dropped by a `--max-length 64` run


# ---------------------------------------------------------------- candidates
# Each factory imports its library and returns split(texts) -> one list of sentence strings per text.

def make_pysbd():
    import pysbd
    segmenter = pysbd.Segmenter(language="en", clean=False)
    return lambda texts: [segmenter.segment(text) for text in texts]


def make_syntok():
    from syntok import segmenter

    def split(texts):
        return [["".join(token.spacing + token.value for token in sentence)
                 for paragraph in segmenter.analyze(text) for sentence in paragraph] for text in texts]
    return split


def make_blingfire():
    import blingfire
    return lambda texts: [blingfire.text_to_sentences(text).split("\n") for text in texts]


def make_sentencex():
    import sentencex
    return lambda texts: [list(sentencex.segment("en", text)) for text in texts]


def make_nupunkt():
    import nupunkt
    return lambda texts: [nupunkt.sent_tokenize(text) for text in texts]


def make_spacy_sentencizer():
    import spacy
    nlp = spacy.blank("en")  # tokenizer rules only: no model download
    nlp.add_pipe("sentencizer")
    return lambda texts: [[sentence.text for sentence in doc.sents] for doc in nlp.pipe(texts, batch_size=256)]


def make_sakurs():
    import sakurs
    return lambda texts: [sakurs.split(text, language="en", threads=1, execution_mode="sequential") for text in texts]


# name -> (distribution on PyPI, factory, the call that splits)
CANDIDATES = {
    "pysbd": ("pysbd", make_pysbd, 'pysbd.Segmenter(language="en", clean=False).segment(text)'),
    "syntok": ("syntok", make_syntok, "syntok.segmenter.analyze(text)"),
    "blingfire": ("blingfire", make_blingfire, "blingfire.text_to_sentences(text)"),
    "sentencex": ("sentencex", make_sentencex, 'sentencex.segment("en", text)'),
    "nupunkt": ("nupunkt", make_nupunkt, "nupunkt.sent_tokenize(text)"),
    "spacy-sentencizer": ("spacy", make_spacy_sentencizer, 'spacy.blank("en") + nlp.add_pipe("sentencizer")'),
    "sakurs": ("sakurs", make_sakurs, 'sakurs.split(text, language="en", threads=1)'),
}


def available_candidates(names):
    splitters = {}
    for name in names:
        try:
            splitters[name] = CANDIDATES[name][1]()
        except ImportError as error:
            print(f"skipping {name}: {error} (pip install -r {OUT_DIR / 'requirements.txt'})", file=sys.stderr)
    return splitters


# ---------------------------------------------------------------- gold data

def read_conllu_paragraphs(path):
    """Paragraphs of a CoNLL-U file as lists of sentence texts, from its `# newdoc`, `# newpar` and `# text` lines."""
    paragraphs = [[]]
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(("# newdoc", "# newpar")) and paragraphs[-1]:
            paragraphs.append([])
        if line.startswith("# text = "):
            paragraphs[-1].append(line[len("# text = "):].strip())
    return [paragraph for paragraph in paragraphs if paragraph]


KEPT_PERIOD = re.compile(r"^(?:[A-Za-z]|.*\..*|Mr|Mrs|Ms|Dr|St|Jr|Sr|Inc|Corp|Co|Ltd|vs|etc|Jan|Feb|Mar|Apr|Jun|Jul|"
                         r"Aug|Sep|Sept|Oct|Nov|Dec|No|pop)$")


def tokenize_like_wikitext(sentence):
    """Split punctuation off words the way WikiText / PTB tokenization does ("it 's", "do n't", "end .").

    A word-final period stays attached to abbreviations and initials ("U.S.", "Mr.", "H."), as in Moses' rules."""
    text = re.sub(r"(\w)(n't)\b", r"\1 \2", sentence)
    text = re.sub(r"(\w)('(?:s|re|ve|ll|d|m))\b", r"\1 \2", text, flags=re.IGNORECASE)
    text = re.sub(r'([;!?()"\[\]]|(?<!\d),|,(?!\d)|:(?!//)|\.\.\.+)', r" \1 ", text)
    words = []
    for word in text.split():
        if len(word) > 1 and word.endswith(".") and not KEPT_PERIOD.match(word[:-1]):
            words += [word[:-1], "."]
        else:
            words.append(word)
    return " ".join(words)


def read_ptb_paragraphs(path, sentences_per_paragraph):
    sentences = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [sentences[start:start + sentences_per_paragraph]
            for start in range(0, len(sentences) - sentences_per_paragraph + 1, sentences_per_paragraph)]


def read_wikitext_paragraphs(path):
    """Body paragraphs of tokenized WikiText: non-empty lines that are not `= Heading =` lines."""
    lines = (line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not (line.startswith("=") and line.endswith("="))]


# ---------------------------------------------------------------- scoring

def boundary_offsets(sentences):
    """Where each sentence after the first starts, counted in non-whitespace characters: comparable across
    segmenters that keep, strip or normalise the whitespace between sentences."""
    offsets, position = set(), 0
    for sentence in sentences[:-1]:
        position += len("".join(sentence.split()))
        offsets.add(position)
    return offsets


def wikitext_rule_offsets(text):
    """Silver boundaries of tokenized WikiText, where every sentence ends in a " . ", " ! " or " ? " token.

    The boundary follows that token and any closing quote or bracket after it, when the next word does not start
    in lower case or with punctuation other than an opening quote or bracket ("Yes ! , he said" is one sentence)."""
    words, offsets, position, quotes = text.split(), set(), 0, 0
    for i, word in enumerate(words):
        position += len(word)
        quotes += word == '"'
        if word not in {".", "!", "?"}:
            continue
        end, after = position, i + 1
        while after < len(words) and (words[after] in {")", "]", "'"} or (words[after] == '"' and quotes % 2)):
            end, quotes, after = end + len(words[after]), quotes + (words[after] == '"'), after + 1
        if after < len(words) and (words[after][0].isupper() or words[after][0].isdigit()
                                   or words[after][0] in "\"([<"):
            offsets.add(end)
    return offsets


def guard_wikitext_numbers(split):
    """WikiText writes 0.7 as "0 @.@ 7"; hide that period from the segmenter (one character for one, so offsets
    do not move; "@_@" does not occur in WikiText) and put it back in the sentences."""
    def guarded(texts):
        return [[sentence.replace("@_@", "@.@") for sentence in sentences]
                for sentences in split([text.replace("@.@", "@_@") for text in texts])]
    return guarded


def same_characters(text, sentences):
    return "".join(text.split()) == "".join("".join(sentences).split())


def f1(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def score(texts, predicted, truths, bootstrap=1000):
    """Boundary precision / recall / F1 (micro over paragraphs), exact-paragraph share, sentence lengths.

    The 95% interval of F1 resamples paragraphs (percentile bootstrap)."""
    counts, exact, altered = [], 0, 0
    for text, sentences, truth in zip(texts, predicted, truths, strict=True):
        sentences = [s for s in sentences if s.strip()]
        altered += not same_characters(text, sentences)
        found = boundary_offsets(sentences)
        counts.append((len(found & truth), len(found - truth), len(truth - found)))
        exact += found == truth
    tp, fp, fn = (sum(column) for column in zip(*counts, strict=True))
    precision, recall, f = f1(tp, fp, fn)
    rng, resampled = random.Random(0), []
    for _ in range(bootstrap):
        sample = [counts[rng.randrange(len(counts))] for _ in counts]
        resampled.append(f1(*(sum(column) for column in zip(*sample, strict=True)))[2])
    resampled.sort()
    lengths = [len(s.split()) for sentences in predicted for s in sentences if s.strip()]
    return {"paragraphs": len(texts), "true_boundaries": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall, "f1": f,
            "f1_ci95": [resampled[int(0.025 * bootstrap)], resampled[int(0.975 * bootstrap) - 1]],
            "exact_paragraphs": exact / len(texts), "text_altered_paragraphs": altered,
            "mean_words_per_sentence": statistics.fmean(lengths), "max_words_per_sentence": max(lengths),
            f"share_sentences_over_{LONG_SENTENCE_WORDS}_words":
                sum(n > LONG_SENTENCE_WORDS for n in lengths) / len(lengths)}


# ---------------------------------------------------------------- speed and footprint

def time_splitters(splitters, texts, rounds, min_seconds=0.5):
    """Seconds per full pass over `texts`, candidates interleaved round by round so load drifts hit all alike.

    A warm-up pass sets how many passes make one timed measurement (at least `min_seconds` of work), so the fast
    candidates are not timed over a few milliseconds of a shared machine."""
    seconds, sentences, passes = {name: [] for name in splitters}, {}, {}
    for name, split in splitters.items():
        start = time.perf_counter()
        result = split(texts)
        passes[name] = max(1, math.ceil(min_seconds / (time.perf_counter() - start)))
        sentences[name] = sum(len([s for s in sentences_of if s.strip()]) for sentences_of in result)
    for _ in range(rounds):
        for name, split in splitters.items():
            start = time.perf_counter()
            for _ in range(passes[name]):
                split(texts)
            seconds[name].append((time.perf_counter() - start) / passes[name])
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    fastest = min(min(times) for times in seconds.values())
    return {name: {"seconds_best": min(times), "seconds_all": times, "megabytes_per_second": megabytes / min(times),
                   "sentences_per_second": sentences[name] / min(times),
                   "paragraphs_per_second": len(texts) / min(times), "sentences_found": sentences[name],
                   "passes_per_measurement": passes[name],
                   "slowdown_vs_fastest": min(times) / fastest}
            for name, times in seconds.items()}


def measure_footprint(name, sample_texts_path):
    """Import time and peak memory of one candidate, in a fresh interpreter (its own process, one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--footprint-probe", name, "--footprint-texts", str(sample_texts_path)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def peak_rss_mb():
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over from the parent
    through fork and exec, so a child started by a large benchmark process would report the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def footprint_probe(name, texts_path):
    start = time.perf_counter()
    split = CANDIDATES[name][1]() if name != "none" else (lambda texts: texts)
    import_seconds = time.perf_counter() - start
    rss_after_import = peak_rss_mb()
    split(json.loads(Path(texts_path).read_text()))
    print(json.dumps({"import_seconds": import_seconds, "peak_rss_mb_after_import": rss_after_import,
                      "peak_rss_mb": peak_rss_mb()}))


def installed_size(distribution):
    """Megabytes on disk of a distribution and of everything it requires (without extras), and that closure."""
    seen, pending, total, own = set(), [distribution], 0, None
    while pending:
        name = re.split(r"[\s<>=!~;\[(]", pending.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        size = sum(f.locate().stat().st_size for f in dist.files or [] if f.locate().is_file())
        total += size
        own = size if own is None else own
        pending += [r for r in dist.requires or [] if "extra ==" not in r]
    return {"own_mb": own / 1e6, "with_dependencies_mb": total / 1e6, "dependencies": sorted(seen - {distribution})}


# ---------------------------------------------------------------- behaviour on hard inputs

EDGE_CASES = {
    "newline, no period": "First line without a stop\nSecond line without a stop",
    "blank line, no period": "A heading\n\nThe paragraph starts here.",
    "wikitext @.@ number": "It weighs 0 @.@ 7 kg . It is blue .",
    "wikitext lowercase": "the claw is blue . the cutter is red .",
    "abbreviation": "Mr. Smith met Dr. Jones in the U.S. on Jan. 5. They talked.",
    "600 words, no punctuation": " ".join(["word"] * 600),
}


def edge_case_sentence_counts(splitters):
    return {name: {case: len([s for s in split([text])[0] if s.strip()]) for case, text in EDGE_CASES.items()}
            for name, split in splitters.items()}


# ---------------------------------------------------------------- report

def machine():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu_model": model, "cores": os.cpu_count(), "python": platform.python_version(), "threads": 1,
            "load_average_at_start": list(os.getloadavg())}


SET_DESCRIPTIONS = {
    "ewt": "Gold: UD English-EWT test paragraphs, sentences joined with one space.",
    "ewt-tokenized": "Gold: the same sentences tokenized the way WikiText is (`tokenize_like_wikitext`).",
    "ewt-tok-lower": "Gold: the same, tokenized and lowercased.",
    "ptb-joined": "Gold: consecutive PTB test sentences joined (lowercased, tokenized, no punctuation at all).",
    "wikitext-silver": "Silver: WikiText-2 valid paragraphs against the rule in `wikitext_rule_offsets` "
                       '(" . ", " ! ", " ? " before a word that does not start in lower case).',
    "wikitext-silver-guarded": 'Silver, as above, with "@.@" hidden from the segmenter (`guard_wikitext_numbers`).',
}


def markdown(results):
    names = list(results["candidates"])
    machine_line = (f"Machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores "
                    f"(load at start {results['machine']['load_average_at_start'][0]:.2f}), "
                    f"Python {results['machine']['python']}, one thread.")
    lines = [f"# Sentence segmenters: results ({results['date']})", "", machine_line, ""]
    for set_name, by_name in results["accuracy"].items():
        first = next(iter(by_name.values()))
        title = f"## Accuracy: {set_name} ({first['paragraphs']} paragraphs, {first['true_boundaries']} boundaries)"
        header = ("| segmenter | P | R | F1 [95% CI] | exact paragraphs | words/sentence mean, max "
                  f"| > {LONG_SENTENCE_WORDS} words | text altered |")
        lines += [title, "", SET_DESCRIPTIONS[set_name], "", header, "|---|---|---|---|---|---|---|---|"]
        for name, s in by_name.items():
            lines.append(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} "
                         f"[{s['f1_ci95'][0]:.3f}, {s['f1_ci95'][1]:.3f}] | {s['exact_paragraphs']:.1%} "
                         f"| {s['mean_words_per_sentence']:.1f}, {s['max_words_per_sentence']} "
                         f"| {s[f'share_sentences_over_{LONG_SENTENCE_WORDS}_words']:.1%} "
                         f"| {s['text_altered_paragraphs']} |")
        lines.append("")
    if results.get("speed"):
        corpus = results["speed_corpus"]
        title = (f"## Speed: WikiText-2 valid, {corpus['paragraphs']} paragraphs, {corpus['megabytes']:.2f} MB, "
                 f"best of {corpus['rounds']} interleaved rounds")
        lines += [title, "",
                  "| segmenter | MB/s | sentences/s (its own) | sentences found | time vs fastest |",
                  "|---|---|---|---|---|"]
        for name, s in results["speed"].items():
            lines.append(f"| {name} | {s['megabytes_per_second']:.2f} | {s['sentences_per_second']:,.0f} "
                         f"| {s['sentences_found']:,} | {s['slowdown_vs_fastest']:.1f}x |")
        lines.append("")
    header = ("| segmenter | version | import s | peak RSS MB (over bare Python) | installed MB (with deps) "
              "| dependencies |")
    lines += ["## Footprint", "", header, "|---|---|---|---|---|---|"]
    for name in names:
        c = results["candidates"][name]
        lines.append(f"| {name} | {c['version']} | {c['import_seconds']:.3f} | {c['peak_rss_over_python_mb']:.1f} "
                     f"| {c['installed']['own_mb']:.1f} ({c['installed']['with_dependencies_mb']:.1f}) "
                     f"| {len(c['installed']['dependencies'])} |")
    lines += ["", "## Sentences produced on hard inputs", "",
              "| segmenter | " + " | ".join(EDGE_CASES) + " |", "|---|" + "---|" * len(EDGE_CASES)]
    for name, counts in results["edge_cases"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts[case]) for case in EDGE_CASES) + " |")
    return "\n".join(lines) + "\n"


def print_table(results):
    widths = {set_name: max(len(set_name), 6) + 2 for set_name in results["accuracy"]}
    header = f"{'segmenter':<18}" + "".join(f"{name:>{widths[name]}}" for name in results["accuracy"]) + f"{'MB/s':>9}"
    print("boundary F1 per reference set; MB/s on WikiText-2 valid, one thread\n" + header)
    for name in results["candidates"]:
        row = "".join(f"{results['accuracy'][s][name]['f1']:>{widths[s]}.3f}" for s in results["accuracy"])
        speed = results.get("speed", {}).get(name, {}).get("megabytes_per_second")
        print(f"{name:<18}{row}{speed if speed is None else f'{speed:>9.2f}'}")


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--gold-conllu", default="/work/.data/ud/en_ewt-ud-test.conllu",
                        help="UD CoNLL-U file with # newpar / # text lines (skipped with a message when absent)")
    parser.add_argument("--ptb", default=str(Path(__file__).parents[2] / "shared/data/ptb/ptb.test.txt"),
                        help="Mikolov PTB test file, one sentence per line (skipped with a message when absent)")
    parser.add_argument("--wikitext", default=str(Path(__file__).parents[2] / "shared/data/wikitext-2/valid.txt"),
                        help="tokenized WikiText file for speed and the silver set (skipped when absent)")
    parser.add_argument("--ptb-sentences-per-paragraph", type=int, default=5,
                        help="PTB sentences joined into one paragraph")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best is reported)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                        metavar="NAME", help=f"segmenters to compare, of: {' '.join(CANDIDATES)}")
    parser.add_argument("--out", default=str(OUT_DIR), help="folder for results.json and results.md")
    parser.add_argument("--footprint-probe", help=argparse.SUPPRESS)
    parser.add_argument("--footprint-texts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.footprint_probe:
        return footprint_probe(args.footprint_probe, args.footprint_texts)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")

    results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "accuracy": {}, "candidates": {}}
    splitters = available_candidates(args.candidates)
    if not splitters:
        sys.exit("no candidate segmenter is installed")

    gold_sets = {}
    if Path(args.gold_conllu).is_file():
        ewt = read_conllu_paragraphs(args.gold_conllu)
        gold_sets["ewt"] = ewt
        gold_sets["ewt-tokenized"] = [[tokenize_like_wikitext(s) for s in p] for p in ewt]
        gold_sets["ewt-tok-lower"] = [[tokenize_like_wikitext(s).lower() for s in p] for p in ewt]
        results["gold_conllu"] = str(args.gold_conllu)
    else:
        print(f"skipping the UD gold sets: {args.gold_conllu} not found (give --gold-conllu PATH)", file=sys.stderr)
    if Path(args.ptb).is_file():
        gold_sets["ptb-joined"] = read_ptb_paragraphs(args.ptb, args.ptb_sentences_per_paragraph)
    else:
        print(f"skipping the PTB gold set: {args.ptb} not found (give --ptb PATH)", file=sys.stderr)
    for set_name, paragraphs in gold_sets.items():
        texts, truths = [" ".join(p) for p in paragraphs], [boundary_offsets(p) for p in paragraphs]
        results["accuracy"][set_name] = {name: score(texts, split(texts), truths) for name, split in splitters.items()}

    sample_path = Path(args.out) / ".footprint_sample.json"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if Path(args.wikitext).is_file():
        wikitext = read_wikitext_paragraphs(args.wikitext)
        results["speed_corpus"] = {"paragraphs": len(wikitext), "rounds": args.rounds,
                                   "megabytes": sum(len(t.encode("utf-8")) for t in wikitext) / 1e6}
        results["speed"] = time_splitters(splitters, wikitext, args.rounds)
        sample_path.write_text(json.dumps(wikitext[:500]))
        truths = [wikitext_rule_offsets(text) for text in wikitext]
        results["accuracy"]["wikitext-silver"] = {
            name: score(wikitext, split(wikitext), truths) for name, split in splitters.items()}
        results["accuracy"]["wikitext-silver-guarded"] = {
            name: score(wikitext, guard_wikitext_numbers(split)(wikitext), truths)
            for name, split in splitters.items()}
    else:
        print(f"skipping speed: {args.wikitext} not found (give --wikitext PATH)", file=sys.stderr)
        sample_path.write_text(json.dumps([" ".join(EDGE_CASES.values())] * 100))

    bare_python = measure_footprint("none", sample_path)
    for name in splitters:
        distribution, _, call = CANDIDATES[name]
        footprint = measure_footprint(name, sample_path)
        results["candidates"][name] = {
            "distribution": distribution, "version": importlib.metadata.version(distribution), "call": call,
            "import_seconds": footprint["import_seconds"],
            "peak_rss_over_python_mb": footprint["peak_rss_mb"] - bare_python["peak_rss_mb"],
            "installed": installed_size(distribution)}
    sample_path.unlink()
    results["edge_cases"] = edge_case_sentence_counts(splitters)

    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (Path(args.out) / "results.md").write_text(markdown(results))
    print_table(results)
    print(f"wrote {Path(args.out) / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
