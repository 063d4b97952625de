"""Membership in a seeded random sample: the same answer in Python as in a warehouse's SQL."""

import hashlib

from flywheel.sampling.sql import threshold


def in_random_sample(trace_id: str, rate: float, seed: int) -> bool:
    """Whether the random rule picks this trace: the Python twin of ``random_predicate_sql``."""
    prefix = int(hashlib.md5(f"{seed}:{trace_id}".encode()).hexdigest()[:8], 16)
    return prefix < threshold(rate)
