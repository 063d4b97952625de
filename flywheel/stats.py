"""Small, exact statistics for pass rates: binomial intervals and the exact McNemar test.

Pure Python on purpose: the numbers behind a release gate should be checkable by hand, and these
few functions are tested against hand-computed values.
"""

from __future__ import annotations

import math

from flywheel.errors import BadInput

Z95 = 1.959963984540054


def _check(passed: int, total: int) -> None:
    if total < 0 or not 0 <= passed <= total:
        raise BadInput(f"{passed} passed of {total}: expected 0 <= passed <= total")


NO_TRIALS = (math.nan, math.nan)  # the interval of a rate with no trials: unknown, not (0, 1)


def wilson(
    passed: int, total: int, z: float = Z95, no_data: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Wilson score interval of ``passed/total`` (95% by default); ``no_data`` when there is none."""
    _check(passed, total)
    if total == 0:
        return no_data
    p = passed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At 0 or total passes an end is exactly 0 or 1; the subtraction would leave rounding dust there
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == total else min(1.0, centre + half)
    return low, high


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson(passed: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval of ``passed/total``; (0, 1) when there is no data."""
    _check(passed, total)
    if total == 0:
        return 0.0, 1.0
    # lower: P(X >= passed | p) = alpha/2; upper: P(X <= passed | p) = alpha/2
    lower = 0.0 if passed == 0 else _solve(lambda p: 1 - binomial_cdf(passed - 1, total, p) - alpha / 2)
    upper = 1.0 if passed == total else _solve(lambda p: alpha / 2 - binomial_cdf(passed, total, p))
    return lower, upper


def _solve(increasing) -> float:
    """The root in (0, 1) of a function that increases in p, by bisection."""
    low, high = 0.0, 1.0
    for _ in range(100):
        middle = (low + high) / 2
        if increasing(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def mcnemar_exact(pass_to_fail: int, fail_to_pass: int) -> float:
    """Two-sided exact McNemar p-value for paired outcomes: the binomial test of the discordant pairs.

    ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``; 1.0 with no discordant pair.
    """
    if pass_to_fail < 0 or fail_to_pass < 0:
        raise BadInput(f"discordant counts {pass_to_fail}, {fail_to_pass}: expected non-negative counts")
    n = pass_to_fail + fail_to_pass
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(pass_to_fail, fail_to_pass) + 1))
    return min(1.0, 2 * tail / 2**n)


def rate(passed: int, total: int) -> dict:
    """``{"passed", "total", "rate", "ci"}`` with the Wilson 95% interval; rate is None with no data."""
    low, high = wilson(passed, total)
    return {
        "passed": passed,
        "total": total,
        "rate": passed / total if total else None,
        "ci": [round(low, 4), round(high, 4)],
    }
