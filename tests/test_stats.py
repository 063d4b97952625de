"""Intervals and the exact McNemar test against values worked out by hand (shown in each test)."""

import pytest

from flywheel.errors import BadInput
from flywheel.stats import binomial_cdf, clopper_pearson, mcnemar_exact, rate, wilson


def test_wilson_interval_of_8_of_10():
    # centre (0.8 + z²/20) / (1 + z²/10) = 0.99208 / 1.38415 = 0.71674
    # half z·sqrt(0.8·0.2/10 + z²/400) / 1.38415 = 1.95996·0.16001 / 1.38415 = 0.22658
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.49016, abs=5e-5)
    assert high == pytest.approx(0.94332, abs=5e-5)


def test_wilson_interval_at_the_edges_stays_inside_0_1():
    # 0 of 10: centre = half = (z²/20) / (1 + z²/10) = 0.19208 / 1.38415 = 0.13877 → (0, 0.27753)
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=5e-5)
    assert wilson(10, 10) == pytest.approx((0.72247, 1.0), abs=5e-5)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("total", [1, 5, 6, 70, 1000])
def test_wilson_ends_are_exact_at_no_and_all_passes(total):
    # mathematically centre - half = 0 at 0 passes; rounding must not leave a lower bound above 0.0
    assert wilson(0, total)[0] == 0.0
    assert wilson(total, total)[1] == 1.0


def test_clopper_pearson_at_the_edges_has_a_closed_form():
    # 0 of n: upper = 1 - (α/2)^(1/n); n of n: lower = (α/2)^(1/n); 0.025^(1/10) = 0.69150
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-9)
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-9)


def test_clopper_pearson_of_8_of_10_solves_both_tails():
    low, high = clopper_pearson(8, 10)
    # the bounds are where the binomial tails equal α/2
    assert 1 - binomial_cdf(7, 10, low) == pytest.approx(0.025, abs=1e-9)
    assert binomial_cdf(8, 10, high) == pytest.approx(0.025, abs=1e-9)
    assert (low, high) == pytest.approx((0.44390, 0.97479), abs=5e-5)


def test_clopper_pearson_is_wider_than_wilson():
    for passed, total in ((3, 20), (17, 20), (50, 100)):
        cp, wi = clopper_pearson(passed, total), wilson(passed, total)
        assert cp[0] <= wi[0] and cp[1] >= wi[1]


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, 1.0),  # no discordant pair
        (0, 5, 2 / 32),  # 2·P(X<=0), X~Bin(5, 1/2) = 2·1/32
        (1, 6, 2 * (1 + 7) / 128),  # 2·(C(7,0)+C(7,1))/2⁷ = 0.125
        (2, 8, 2 * (1 + 10 + 45) / 1024),  # 0.109375
        (8, 2, 2 * (1 + 10 + 45) / 1024),  # symmetric
        (3, 3, 1.0),  # 2·P(X<=3) with n=6 is 2·42/64 > 1: capped
    ],
)
def test_exact_mcnemar_against_hand_computed_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-12)


def test_binomial_cdf_of_a_small_case():
    # P(X <= 1), X~Bin(3, 0.5) = (1 + 3)/8
    assert binomial_cdf(1, 3, 0.5) == pytest.approx(0.5)
    assert binomial_cdf(-1, 3, 0.5) == 0.0 and binomial_cdf(3, 3, 0.5) == 1.0


def test_rate_reports_counts_rate_and_interval():
    assert rate(8, 10) == {"passed": 8, "total": 10, "rate": 0.8, "ci": [0.4902, 0.9433]}
    assert rate(0, 0)["rate"] is None


def test_bad_counts_are_refused():
    with pytest.raises(BadInput):
        wilson(11, 10)
    with pytest.raises(BadInput):
        mcnemar_exact(-1, 2)
