"""Several labels per item, and how far labelers agree: Cohen's kappa (two raters), Fleiss' (more).

A batch may ask for several labels per item (``set_overlap``): the item stays in the queue until that
many distinct labelers labeled it, and ``agreement`` reports the kappa overall and per taxonomy code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlite_utils import Database

from flywheel.auth import User, require_role
from flywheel.errors import BadInput, NotFound
from flywheel.review import label_queue
from flywheel.store.audit import audit
from flywheel.store.clock import now
from flywheel.store.db import write


@dataclass(frozen=True)
class Agreement:
    """Inter-rater agreement over a batch's items that several labelers labeled."""

    method: str | None  # "cohen", "fleiss", or None when fewer than two raters overlap
    items: int
    raters: int
    kappa: float
    per_category: dict[str, float] = field(default_factory=dict)


def set_overlap(db: Database, user: User, batch_id: int, labels_per_item: int) -> None:
    """Ask for ``labels_per_item`` distinct labelers per item of a batch (leads only)."""
    require_role(user, "lead")
    if (
        isinstance(labels_per_item, bool)
        or not isinstance(labels_per_item, int)
        or not 1 <= labels_per_item <= 5
    ):
        raise BadInput(f"labels per item {labels_per_item!r}: expected 1..5")
    with write(db):
        if db.execute("SELECT 1 FROM sample_batches WHERE id = ?", [batch_id]).fetchone() is None:
            raise NotFound(f"no sample batch {batch_id}")
        db.table("batch_overlap").upsert(
            {
                "batch_id": batch_id,
                "labels_per_item": labels_per_item,
                "set_by": user.name,
                "set_at": now(),
            },
            pk="batch_id",
        )
        label_queue.set_needed(db, batch_id, labels_per_item)
        audit(db, user.name, "set_overlap", "sample_batch", batch_id, labels_per_item=labels_per_item)


def overlap(db: Database, batch_id: int) -> int:
    """How many labels per item the batch asks for."""
    row = db.execute("SELECT labels_per_item FROM batch_overlap WHERE batch_id = ?", [batch_id]).fetchone()
    return row[0] if row else 1


def agreement(db: Database, user: User, batch_id: int) -> Agreement:
    """Cohen's (two raters) or Fleiss' kappa over the batch's items with several labels (leads only)."""
    require_role(user, "lead")
    ratings: dict[str, dict[str, str]] = {}
    for trace_id, labeler, kind, code in db.execute(
        "SELECT trace_id, labeler, kind, code FROM labels WHERE batch_id = ? AND undone_at IS NULL",
        [batch_id],
    ):
        ratings.setdefault(trace_id, {})[labeler] = code or kind
    return agreement_of(list(ratings.values()))


def agreement_of(ratings: Sequence[Mapping[str, str]]) -> Agreement:
    """Agreement of items rated as {rater: category}; items with one rating are left out."""
    rated = [r for r in ratings if len(r) >= 2]
    raters = sorted({name for r in rated for name in r})
    if not rated:
        return Agreement(None, 0, len(raters), math.nan)
    if len(raters) == 2:
        a, b = [r[raters[0]] for r in rated], [r[raters[1]] for r in rated]
        per = {c: cohen_kappa([x == c for x in a], [y == c for y in b]) for c in sorted({*a, *b})}
        return Agreement("cohen", len(rated), 2, cohen_kappa(a, b), per)
    # Fleiss needs the same number of ratings per item: use the most common number.
    size = Counter(len(r) for r in rated).most_common(1)[0][0]
    table = [Counter(r.values()) for r in rated if len(r) == size]
    per = {c: fleiss_category_kappa(table, c) for c in sorted({c for row in table for c in row})}
    return Agreement("fleiss", len(table), len(raters), fleiss_kappa(table), per)


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' categories over the same items; NaN when chance agreement is 1."""
    if len(a) != len(b) or not a:
        raise BadInput(f"cohen_kappa needs two equally long, non-empty ratings; got {len(a)} and {len(b)}")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return math.nan if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_kappa(table: Sequence[Mapping[str, int]]) -> float:
    """Fleiss' kappa of items given as {category: raters who chose it}, each item by the same count."""
    n, m = _fleiss_shape(table)
    per_item = [(sum(v * v for v in row.values()) - m) / (m * (m - 1)) for row in table]
    observed = sum(per_item) / n
    totals: Counter[str] = Counter()
    for row in table:
        totals.update(row)
    chance = sum((t / (n * m)) ** 2 for t in totals.values())
    return math.nan if chance == 1 else (observed - chance) / (1 - chance)


def fleiss_category_kappa(table: Sequence[Mapping[str, int]], category: str) -> float:
    """Fleiss' kappa of one category against all others; NaN if every rating or none is it."""
    n, m = _fleiss_shape(table)
    share = sum(row.get(category, 0) for row in table) / (n * m)
    if share in (0, 1):
        return math.nan
    disagreement = sum(row.get(category, 0) * (m - row.get(category, 0)) for row in table)
    return 1 - disagreement / (n * m * (m - 1) * share * (1 - share))


def _fleiss_shape(table: Sequence[Mapping[str, int]]) -> tuple[int, int]:
    sizes = {sum(row.values()) for row in table}
    if not table or len(sizes) != 1 or min(sizes) < 2:
        raise BadInput(f"fleiss_kappa needs items rated by the same number (>= 2) of raters; got {sizes}")
    return len(table), sizes.pop()
