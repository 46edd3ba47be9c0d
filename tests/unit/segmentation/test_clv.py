"""BG/NBD, Gamma-Gamma and CLV: the published CDNOW estimates, recovery of known parameters
from simulated customers, the conditional predictions against simulation, and the shape of
the scores (p_alive, expected purchases, discounting)."""

from __future__ import annotations

import json
import math
import time
from datetime import date
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import chi2

from services.segmentation.clv import (
    MODEL_VERSION,
    BgNbdParams,
    CustomerScores,
    CustomerValueModel,
    GammaGammaParams,
    bgnbd_log_likelihood,
    clv,
    expected_average_spend,
    expected_purchases,
    fit_bgnbd,
    fit_customer_value,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    score_customers,
)
from services.segmentation.transactions import CustomerSummary, read_transactions, summarize

Floats = npt.NDArray[np.float64]
# Fader, Hardie and Lee (2005) on the CDNOW sample, and the Gamma-Gamma note on the same data.
PUBLISHED_BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
PUBLISHED_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
PUBLISHED_LOG_LIKELIHOOD = -9582.4
SIMULATED = BgNbdParams(r=0.5, alpha=4.0, a=0.8, b=2.5)
SIMULATED_SPEND = GammaGammaParams(p=6.0, q=4.0, gamma=15.0)


@pytest.fixture(scope="module")
def cdnow_summaries(cdnow_dir: Path) -> list[CustomerSummary]:
    """The sample's 39-week calibration period in weeks."""
    return summarize(read_transactions(cdnow_dir / "CDNOW_sample.txt"), date(1997, 9, 30))


@pytest.fixture(scope="module")
def cdnow_model(cdnow_summaries: list[CustomerSummary]) -> tuple[CustomerValueModel, float]:
    """The fitted model, and how long the fit took."""
    started = time.perf_counter()
    model = fit_customer_value(cdnow_summaries)
    return model, time.perf_counter() - started


def test_cdnow_fit_reproduces_the_published_estimates(
    cdnow_model: tuple[CustomerValueModel, float],
) -> None:
    model, seconds = cdnow_model
    assert model.customers == 2_357
    assert model.repeat_customers == 946
    for name, published in PUBLISHED_BGNBD.as_dict().items():
        assert model.bgnbd.as_dict()[name] == pytest.approx(published, rel=0.02), name
    for name, published in PUBLISHED_GAMMA_GAMMA.as_dict().items():
        assert model.gamma_gamma.as_dict()[name] == pytest.approx(published, rel=0.02), name
    assert seconds < 10


def test_cdnow_log_likelihood_at_the_published_estimates(
    cdnow_summaries: list[CustomerSummary],
    cdnow_model: tuple[CustomerValueModel, float],
) -> None:
    x, t_x, age = _histories(cdnow_summaries)
    published = float(bgnbd_log_likelihood(PUBLISHED_BGNBD, x, t_x, age).sum())
    fitted = float(bgnbd_log_likelihood(cdnow_model[0].bgnbd, x, t_x, age).sum())
    assert published == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.1)
    # The optimum is at least as likely as the rounded published point, and barely more.
    assert published <= fitted < published + 0.05


def test_cdnow_model_as_dict(cdnow_model: tuple[CustomerValueModel, float]) -> None:
    model = cdnow_model[0]
    assert json.loads(json.dumps(model.as_dict())) == {
        "model_version": MODEL_VERSION,
        "time_unit_days": 7.0,
        "customers": 2_357,
        "repeat_customers": 946,
        "bgnbd": model.bgnbd.as_dict(),
        "gamma_gamma": model.gamma_gamma.as_dict(),
    }


def test_cdnow_scores(
    cdnow_summaries: list[CustomerSummary],
    cdnow_model: tuple[CustomerValueModel, float],
) -> None:
    scores = score_customers(cdnow_summaries, cdnow_model[0])
    assert list(scores) == [s.customer_id for s in cdnow_summaries]
    for summary in cdnow_summaries:
        score = scores[summary.customer_id]
        assert 0 < score.p_alive <= 1
        assert 0 < score.expected_purchases_30d < score.expected_purchases_90d
        assert score.clv_12m > 0
        if summary.frequency == 0:
            assert score.p_alive == 1.0
    # Same purchases and spend: the one silent for 30 weeks is likelier gone and worth less.
    lapsed, recent = score_customers(
        [
            CustomerSummary("lapsed", 5, 9.0, 39.0, 30.0),
            CustomerSummary("recent", 5, 38.0, 39.0, 30.0),
        ],
        cdnow_model[0],
    ).values()
    assert lapsed.p_alive < 0.5 < recent.p_alive
    assert lapsed.expected_purchases_90d < recent.expected_purchases_90d
    assert lapsed.clv_12m < recent.clv_12m


def test_bgnbd_fit_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(20_050_101)
    x, t_x, age = _simulate_histories(SIMULATED, 20_000, rng)
    fitted = fit_bgnbd(x, t_x, age)
    # a and b trade off against each other, so they are estimated less tightly than r, alpha.
    tolerance = {"r": 0.1, "alpha": 0.1, "a": 0.2, "b": 0.2}
    for name, true in SIMULATED.as_dict().items():
        assert fitted.as_dict()[name] == pytest.approx(true, rel=tolerance[name]), name
    # The fit is the maximum, and the truth lies in its 99.9% likelihood-ratio region.
    ratio = 2 * float(
        bgnbd_log_likelihood(fitted, x, t_x, age).sum()
        - bgnbd_log_likelihood(SIMULATED, x, t_x, age).sum()
    )
    assert 0 <= ratio < chi2.ppf(0.999, df=4)


def test_bgnbd_fit_is_the_same_in_days_with_alpha_in_days() -> None:
    rng = np.random.default_rng(3)
    x, t_x, age = _simulate_histories(SIMULATED, 3_000, rng)
    weeks = fit_bgnbd(x, t_x, age)
    days = fit_bgnbd(x, t_x * 7, age * 7)
    assert days.alpha == pytest.approx(weeks.alpha * 7, rel=1e-3)
    for name in ("r", "a", "b"):
        assert days.as_dict()[name] == pytest.approx(weeks.as_dict()[name], rel=1e-3)


def test_predictions_match_simulated_futures() -> None:
    """Averaged over any group of customers picked by their history, the predicted purchases
    in the next 10 weeks and p_alive match what simulated customers went on to do."""
    rng = np.random.default_rng(11)
    n, age_weeks, horizon = 200_000, 20.0, 10.0
    x, t_x, future, alive = _simulate_futures(SIMULATED, n, age_weeks, horizon, rng)
    age = np.full(n, age_weeks)
    predicted = expected_purchases(SIMULATED, horizon, x, t_x, age)
    alive_probability = p_alive(SIMULATED, x, t_x, age)
    groups = {
        "everyone": np.ones(n, dtype=bool),
        "no repeat": x == 0,
        "one repeat": x == 1,
        "frequent, recent": (x >= 2) & (t_x > age_weeks - 2),
        "frequent, lapsed": (x >= 2) & (t_x < age_weeks / 2),
    }
    for name, group in groups.items():
        size = int(group.sum())
        assert size > 5_000, name
        error = float(future[group].std()) / math.sqrt(size)
        assert float(predicted[group].mean()) == pytest.approx(
            float(future[group].mean()), abs=4 * error
        ), name
        share = float(alive[group].mean())
        error = math.sqrt(max(share * (1 - share), 1e-6) / size)
        assert float(alive_probability[group].mean()) == pytest.approx(share, abs=4 * error), name


def test_p_alive_is_one_without_repeat_purchases() -> None:
    assert p_alive(PUBLISHED_BGNBD, [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 10.0, 100.0]).tolist() == [
        1.0,
        1.0,
        1.0,
    ]


def test_p_alive_falls_with_silence_and_rises_with_recency() -> None:
    ages = np.linspace(5.0, 80.0, 16)
    longer_silence = p_alive(PUBLISHED_BGNBD, np.full(16, 3), np.full(16, 5.0), ages)
    assert np.all(np.diff(longer_silence) < 0)
    recencies = np.linspace(1.0, 40.0, 16)
    more_recent = p_alive(PUBLISHED_BGNBD, np.full(16, 3), recencies, np.full(16, 40.0))
    assert np.all(np.diff(more_recent) > 0)
    assert more_recent[-1] == pytest.approx(1 / (1 + 0.793 / (2.426 + 2)), rel=1e-3)
    # A buyer seen at the end of the period is likelier alive the more often they bought.
    by_count = p_alive(PUBLISHED_BGNBD, [1, 3, 10], [40.0, 40.0, 40.0], [40.0, 40.0, 40.0])
    assert np.all(np.diff(by_count) > 0)


def test_expected_purchases_grow_with_the_horizon_from_zero() -> None:
    history = ([2], [20.0], [30.0])
    assert expected_purchases(PUBLISHED_BGNBD, 0.0, *history)[0] == pytest.approx(0.0, abs=1e-12)
    horizons = np.linspace(1.0, 104.0, 20)
    values = [float(expected_purchases(PUBLISHED_BGNBD, h, *history)[0]) for h in horizons]
    assert np.all(np.diff(values) > 0)
    with pytest.raises(ValueError, match="must not be negative"):
        expected_purchases(PUBLISHED_BGNBD, -1.0, *history)


def test_expected_purchases_of_heavy_buyers_stay_finite() -> None:
    """Customers who bought every day for a year (hundreds to thousands of purchases): over
    two years the prediction is finite, grows with x and stays under their rate times two
    years (they may still drop out); over an instant it is the posterior rate
    (r + x) / (alpha + T) times the instant, while alive."""
    x = np.array([100.0, 1_000.0, 3_000.0])
    age = np.full(3, 52.0)
    two_years = expected_purchases(PUBLISHED_BGNBD, 104.0, x, age, age)
    assert np.all(np.isfinite(two_years))
    assert np.all(np.diff(two_years) > 0)
    assert np.all(two_years < (0.243 + x) / (4.414 + 52.0) * 104.0)
    instant = expected_purchases(PUBLISHED_BGNBD, 1e-3, x, age, age)
    alive = p_alive(PUBLISHED_BGNBD, x, age, age)
    assert instant / alive == pytest.approx((0.243 + x) / (4.414 + 52.0) * 1e-3, rel=1e-3)


def test_expected_purchases_are_continuous_through_a_equal_to_one() -> None:
    history = ([3.0], [20.0], [39.0])
    values = [
        float(expected_purchases(BgNbdParams(0.243, 4.414, a, 2.426), 13.0, *history)[0])
        for a in (1 - 1e-3, 1.0, 1 + 1e-3)
    ]
    assert np.all(np.isfinite(values))
    assert values[1] == pytest.approx((values[0] + values[2]) / 2, rel=1e-4)


def test_expected_purchases_of_a_new_customer_match_the_population_mean() -> None:
    """With no history, the expectation is E[X(t)] of the paper's equation (7), which for
    small t is the mean purchase rate r / alpha times t."""
    small = float(expected_purchases(PUBLISHED_BGNBD, 1e-4, [0], [0.0], [0.0])[0])
    assert small == pytest.approx(1e-4 * 0.243 / 4.414, rel=1e-3)


def test_gamma_gamma_fit_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(2005)
    frequency, monetary = _simulate_spend(SIMULATED_SPEND, 20_000, rng)
    fitted = fit_gamma_gamma(frequency, monetary)
    for name, true in SIMULATED_SPEND.as_dict().items():
        assert fitted.as_dict()[name] == pytest.approx(true, rel=0.1), name
    ratio = 2 * float(
        gamma_gamma_log_likelihood(fitted, frequency, monetary).sum()
        - gamma_gamma_log_likelihood(SIMULATED_SPEND, frequency, monetary).sum()
    )
    assert 0 <= ratio < chi2.ppf(0.999, df=3)


def test_gamma_gamma_fit_ignores_customers_without_repeat_spend() -> None:
    rng = np.random.default_rng(5)
    frequency, monetary = _simulate_spend(SIMULATED_SPEND, 2_000, rng)
    with_others = fit_gamma_gamma(
        np.concatenate([frequency, [0, 0, 4]]), np.concatenate([monetary, [0.0, 0.0, 0.0]])
    )
    alone = fit_gamma_gamma(frequency, monetary)
    assert with_others.as_dict() == pytest.approx(alone.as_dict())


def test_expected_spend_shrinks_own_mean_towards_the_population_mean() -> None:
    params = PUBLISHED_GAMMA_GAMMA
    population = params.p * params.gamma / (params.q - 1)
    assert expected_average_spend(params, [0], [0.0])[0] == pytest.approx(population)
    own = 100.0
    spends = expected_average_spend(params, [1, 2, 5, 20, 1000], [own] * 5)
    assert np.all((population < spends) & (spends < own))
    assert np.all(np.diff(spends) > 0)
    assert spends[-1] == pytest.approx(own, rel=0.01)
    with pytest.raises(ValueError, match="infinite"):
        expected_average_spend(GammaGammaParams(p=1.0, q=0.5, gamma=1.0), [0], [0.0])


def test_clv_discounts_each_month() -> None:
    model = _model()
    history = ([4], [30.0], [39.0], [50.0])
    spend = float(expected_average_spend(model.gamma_gamma, [4], [50.0])[0])
    year = 360.0 / 7
    undiscounted = float(clv(model, *history, monthly_discount_rate=0.0)[0])
    assert undiscounted == pytest.approx(
        spend * float(expected_purchases(model.bgnbd, year, *history[:3])[0])
    )
    one_month = float(clv(model, *history, months=1)[0])
    assert one_month == pytest.approx(
        spend * float(expected_purchases(model.bgnbd, 30 / 7, *history[:3])[0]) / 1.01
    )
    by_rate = [float(clv(model, *history, monthly_discount_rate=d)[0]) for d in (0, 0.01, 0.05)]
    assert by_rate[0] > by_rate[1] > by_rate[2] > 0
    # Each month is worth less than the one before: expected purchases per month fall (some
    # customers churn) and the discount grows.
    by_months = [float(clv(model, *history, months=m)[0]) for m in range(13)]
    increments = np.diff(by_months)
    assert by_months[0] == 0
    assert np.all(increments > 0)
    assert np.all(np.diff(increments) < 0)
    with pytest.raises(ValueError, match="discount rate"):
        clv(model, *history, monthly_discount_rate=-1.0)


def test_scores_use_the_model_time_unit() -> None:
    weeks = _model()
    days = CustomerValueModel(
        bgnbd=BgNbdParams(0.243, 4.414 * 7, 0.793, 2.426),
        gamma_gamma=weeks.gamma_gamma,
        time_unit_days=1.0,
        customers=2,
        repeat_customers=1,
    )
    in_weeks = [CustomerSummary("c", 3, 20.0, 30.0, 40.0)]
    in_days = [CustomerSummary("c", 3, 140.0, 210.0, 40.0)]
    by_week = score_customers(in_weeks, weeks)["c"]
    by_day = score_customers(in_days, days)["c"]
    for name in CustomerScores.__slots__:
        assert getattr(by_day, name) == pytest.approx(getattr(by_week, name), rel=1e-9), name
    assert score_customers([], weeks) == {}


@pytest.mark.parametrize(
    ("summaries", "message"),
    [
        ([], "there are no customers"),
        ([CustomerSummary("a", 3, 5.0, 10.0, 20.0)], "at least two customers"),
        (
            [CustomerSummary("a", 0, 0.0, 10.0, 0.0), CustomerSummary("b", 0, 0.0, 5.0, 0.0)],
            "at least one customer with a repeat purchase",
        ),
        (
            [CustomerSummary("a", 2, 3.0, 10.0, 20.0), CustomerSummary("b", 0, 0.0, 5.0, 0.0)],
            "Gamma-Gamma needs at least two customers with repeat purchases",
        ),
        (
            [CustomerSummary("a", 2, 12.0, 10.0, 20.0), CustomerSummary("b", 1, 1.0, 5.0, 1.0)],
            "recency must lie between 0 and age",
        ),
    ],
)
def test_degenerate_data_is_refused(summaries: list[CustomerSummary], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_customer_value(summaries)


def test_fit_on_data_that_cannot_identify_the_model_is_refused() -> None:
    # Every customer bought daily to the end: no sign of dropout, so a/b runs off to zero.
    frequency = np.full(50, 20.0)
    with pytest.raises(ValueError, match="did not converge"):
        fit_bgnbd(frequency, np.full(50, 20.0), np.full(50, 20.0))


def _model() -> CustomerValueModel:
    return CustomerValueModel(
        bgnbd=PUBLISHED_BGNBD,
        gamma_gamma=PUBLISHED_GAMMA_GAMMA,
        time_unit_days=7.0,
        customers=2,
        repeat_customers=1,
    )


def _histories(summaries: list[CustomerSummary]) -> tuple[Floats, Floats, Floats]:
    return (
        np.array([s.frequency for s in summaries], dtype=np.float64),
        np.array([s.recency for s in summaries], dtype=np.float64),
        np.array([s.T for s in summaries], dtype=np.float64),
    )


def _simulate_histories(
    params: BgNbdParams, n: int, rng: np.random.Generator
) -> tuple[Floats, Floats, Floats]:
    """Customers whose first purchase was 26 to 52 weeks ago."""
    age = rng.uniform(26.0, 52.0, n)
    x, t_x, _, _ = _simulate(params, age, np.zeros(n), rng)
    return x, t_x, age


def _simulate_futures(
    params: BgNbdParams, n: int, age: float, horizon: float, rng: np.random.Generator
) -> tuple[Floats, Floats, Floats, npt.NDArray[np.bool_]]:
    return _simulate(params, np.full(n, age), np.full(n, horizon), rng)


def _simulate(
    params: BgNbdParams, age: Floats, horizon: Floats, rng: np.random.Generator
) -> tuple[Floats, Floats, Floats, npt.NDArray[np.bool_]]:
    """BG/NBD customers from their first purchase at 0: repeat purchases and the last one's
    time within ``age``, purchases in the ``horizon`` after it, and who was still alive at
    ``age``."""
    n = age.size
    rate = np.maximum(rng.gamma(params.r, 1 / params.alpha, n), 1e-12)
    dropout = rng.beta(params.a, params.b, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    now = np.zeros(n)
    buying = np.arange(n)
    while buying.size:
        now[buying] += rng.exponential(1 / rate[buying])
        buying = buying[now[buying] <= age[buying] + horizon[buying]]
        past = now[buying] <= age[buying]
        x[buying[past]] += 1
        t_x[buying[past]] = now[buying[past]]
        future[buying[~past]] += 1
        drops = rng.random(buying.size) < dropout[buying]
        alive[buying[drops & past]] = False
        buying = buying[~drops]
    return x, t_x, future, alive


def _simulate_spend(
    params: GammaGammaParams, n: int, rng: np.random.Generator
) -> tuple[Floats, Floats]:
    frequency = rng.integers(1, 10, n)
    scale = 1 / rng.gamma(params.q, 1 / params.gamma, n)
    # The mean of x Gamma(p, nu) spends is Gamma(p * x, nu * x).
    monetary = rng.gamma(params.p * frequency, scale / frequency)
    return frequency.astype(np.float64), monetary


def test_expected_purchases_stay_finite_when_the_dropout_beta_is_very_concentrated() -> None:
    # A fit on few customers can put a and b in the millions (a/(a+b) pinned down tightly).
    params = BgNbdParams(r=0.55, alpha=2.55, a=2_035_073.0, b=9_234_735.0)
    ahead = expected_purchases(params, 30 / 7, [0, 4, 7], [0.0, 19.9, 42.4], [10.0, 31.6, 48.9])
    assert np.all(np.isfinite(ahead))
    assert np.all(ahead > 0)
    # Close to the limit of a fixed dropout probability p = a / (a + b) after each purchase.
    longer = expected_purchases(params, 90 / 7, [0, 4, 7], [0.0, 19.9, 42.4], [10.0, 31.6, 48.9])
    assert np.all(longer > ahead)
