"""Churn risk, expected purchases and lifetime value from order histories alone.

Two probability models, fitted by maximum likelihood over all customers:

- **BG/NBD** (Fader, Hardie and Lee, 2005, "Counting your customers the easy way"): while
  alive, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each
  purchase they drop out with probability p ~ Beta(a, b). It gives ``p_alive`` (the chance the
  customer has not silently churned) and the expected number of purchases in a coming period.
- **Gamma-Gamma** (Fader, Hardie and Lee, 2005, "RFM and CLV: using iso-value curves"): the
  spend of each purchase is Gamma(p, nu) with nu ~ Gamma(q, gamma), independent of the buying
  rate; it turns a customer's mean repeat spend into an expected spend per future purchase,
  shrunk towards the population mean the fewer purchases we have seen.

Lifetime value adds, month by month for 12 months, the expected purchases in that month times
the expected spend, discounted at a monthly rate (months of 30 days). Time is in the unit the
summaries were made with (weeks by default), so ``alpha`` is in that unit too.

The likelihoods are written with numpy/scipy (``gammaln``, ``logaddexp``, ``hyp2f1``); the fits
optimise the log-parameters, on identical customers aggregated with weights, which keeps a
fit over tens of thousands of customers to well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

from services.segmentation.transactions import CustomerSummary

MODEL_VERSION = "bgnbd-gg-1"
DAYS_PER_MONTH = 30.0
DEFAULT_MONTHLY_DISCOUNT_RATE = 0.01
CLV_MONTHS = 12
# Log-parameters are searched within exp(+-20); an estimate at the edge means the data do not
# pin the parameter down (for example nobody ever bought twice).
_LOG_BOUND = 20.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """BG/NBD parameters: purchase rate ~ Gamma(shape ``r``, rate ``alpha``) per time unit,
    dropout probability after each purchase ~ Beta(``a``, ``b``)."""

    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        """The parameters by name, for JSON and storage."""
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend per purchase ~ Gamma(``p``, nu), nu ~ Gamma(``q``,
    ``gamma``); the population's mean spend per purchase is ``p * gamma / (q - 1)``."""

    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        """The parameters by name, for JSON and storage."""
        return {"p": self.p, "q": self.q, "gamma": self.gamma}


@dataclass(frozen=True, slots=True)
class CustomerValueModel:
    """Both fitted models with what they were fitted on, stored next to the scores they make."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    time_unit_days: float
    customers: int
    repeat_customers: int
    model_version: str = MODEL_VERSION

    def as_dict(self) -> dict[str, object]:
        """The model as plain JSON-ready values."""
        return {
            "model_version": self.model_version,
            "time_unit_days": self.time_unit_days,
            "customers": self.customers,
            "repeat_customers": self.repeat_customers,
            "bgnbd": self.bgnbd.as_dict(),
            "gamma_gamma": self.gamma_gamma.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class CustomerScores:
    """What a marketer reads for one customer: the chance they are still a customer, how many
    purchases to expect in the next 30 and 90 days, and their discounted value over the next
    12 months (in the currency of the amounts)."""

    p_alive: float
    expected_purchases_30d: float
    expected_purchases_90d: float
    clv_12m: float


def _floats(values: npt.ArrayLike) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def bgnbd_log_likelihood(
    params: BgNbdParams, frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> FloatArray:
    """Each customer's log-likelihood of ``frequency`` repeat purchases, the last at
    ``recency``, in a history of length ``age`` (x, t_x and T in the papers), all measured from
    the first purchase."""
    x, t_x, age = _floats(frequency), _floats(recency), _floats(age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    log_a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    log_a3 = -(r + x) * np.log(alpha + age)
    # Dropped out right after the last purchase: only possible once there was a repeat one.
    repeat = x > 0
    log_a4 = np.full_like(x, -np.inf)
    log_a4[repeat] = (
        math.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    result: FloatArray = log_a1 + log_a2 + np.logaddexp(log_a3, log_a4)
    return result


def fit_bgnbd(frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters.

    Raises ``ValueError`` when the data cannot identify the model: fewer than two customers,
    nobody with a repeat purchase, or an optimum that runs off to the search bounds.
    """
    x, t_x, age = _floats(frequency), _floats(recency), _floats(age)
    _check_histories(x, t_x, age)
    if x.size < 2:
        raise ValueError("BG/NBD needs at least two customers")
    if not np.any(x > 0):
        raise ValueError("BG/NBD needs at least one customer with a repeat purchase")
    if not np.any(age > 0):
        raise ValueError("BG/NBD needs customers observed for longer than zero time")
    # Fit in a time unit where the longest history is 10: alpha scales with time, the rest
    # does not, and the optimiser starts from all-ones near the answer.
    scale = float(age.max()) / 10.0
    rows, weights = _aggregate(x, t_x / scale, age / scale)

    def negative_log_likelihood(log_params: FloatArray) -> float:
        r, alpha, a, b = np.exp(log_params)
        ll = bgnbd_log_likelihood(BgNbdParams(r, alpha, a, b), rows[0], rows[1], rows[2])
        return -float(np.dot(weights, ll)) / float(weights.sum())

    r, alpha, a, b = _maximise(negative_log_likelihood, 4, "BG/NBD")
    return BgNbdParams(r=r, alpha=alpha * scale, a=a, b=b)


def p_alive(
    params: BgNbdParams, frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> FloatArray:
    """The probability each customer has not dropped out by the end of observation.

    It is 1 for customers without a repeat purchase: in BG/NBD dropout happens only right
    after a purchase, so a single first purchase gives no evidence of churn yet.
    """
    x, t_x, age = _floats(frequency), _floats(recency), _floats(age)
    result: FloatArray = 1.0 / (1.0 + _dropout_odds(params, x, t_x, age))
    return result


def _dropout_odds(
    params: BgNbdParams, x: FloatArray, t_x: FloatArray, age: FloatArray
) -> FloatArray:
    """P(dropped out) / P(alive) given the history; 0 without a repeat purchase."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    odds = np.zeros_like(x)
    repeat = x > 0
    xr = x[repeat]
    odds[repeat] = np.exp(
        math.log(a)
        - np.log(b + xr - 1)
        + (r + xr) * (np.log(alpha + age[repeat]) - np.log(alpha + t_x[repeat]))
    )
    return odds


def expected_purchases(
    params: BgNbdParams,
    t: float,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
) -> FloatArray:
    """Expected number of purchases of each customer in the next ``t`` time units (equation
    (10) of Fader, Hardie and Lee 2005), accounting for the chance they have already churned.

    The paper's w^(r+x) * 2F1(r+x, b+x; a+b+x-1; z), with w = (alpha+T) / (alpha+T+t) and
    z = 1 - w, is computed through Euler's transformation as
    w^(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z): the same value, but the huge and tiny factors of
    a customer with hundreds of purchases cancel on paper instead of overflowing to NaN.
    """
    if t < 0:
        raise ValueError(f"the horizon must not be negative, got {t}")
    x, t_x, age = _floats(frequency), _floats(recency), _floats(age)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # At a = 1 the formula is 0/0 but continuous in a: step just beside it (10 digits left).
    if abs(a - 1) < 1e-6:
        a = 1 + math.copysign(1e-6, a - 1)
    w = (alpha + age) / (alpha + age + t)
    z = t / (alpha + age + t)
    with np.errstate(all="ignore"):
        hyp = hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        unscaled = 1 - w ** (a - 1) * hyp
        # With a and b in the millions (a dropout rate the data pin down tightly) the
        # transformed form overflows instead; the paper's own form is then well behaved.
        direct = 1 - w ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
    unscaled = np.where(np.isfinite(unscaled), unscaled, direct)
    alive_purchases = (a + b + x - 1) / (a - 1) * unscaled
    result: FloatArray = alive_purchases / (1.0 + _dropout_odds(params, x, t_x, age))
    return result


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> FloatArray:
    """Each repeat customer's log-likelihood of a mean spend ``monetary`` over ``frequency``
    purchases (both must be positive)."""
    x, m = _floats(frequency), _floats(monetary)
    p, q, gamma = params.p, params.q, params.gamma
    px = p * x
    result: FloatArray = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(gamma + m * x)
    )
    return result


def fit_gamma_gamma(frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from the customers with repeat purchases of a
    positive mean spend (the others carry no information about spend per repeat purchase).

    Raises ``ValueError`` with fewer than two such customers or when the optimum runs off to
    the search bounds.
    """
    x, m = _floats(frequency), _floats(monetary)
    if x.shape != m.shape:
        raise ValueError("frequency and monetary must have the same length")
    if not (np.all(np.isfinite(m)) and np.all(m >= 0)):
        raise ValueError("monetary values must be finite and not negative")
    used = (x > 0) & (m > 0)
    if np.count_nonzero(used) < 2:
        raise ValueError("Gamma-Gamma needs at least two customers with repeat purchases")
    # Fit in a currency unit where the mean spend is 1: gamma scales with money, p and q not.
    scale = float(m[used].mean())
    rows, weights = _aggregate(x[used], m[used] / scale)

    def negative_log_likelihood(log_params: FloatArray) -> float:
        p, q, gamma = np.exp(log_params)
        ll = gamma_gamma_log_likelihood(GammaGammaParams(p, q, gamma), rows[0], rows[1])
        return -float(np.dot(weights, ll)) / float(weights.sum())

    p, q, gamma = _maximise(negative_log_likelihood, 3, "Gamma-Gamma")
    return GammaGammaParams(p=p, q=q, gamma=gamma * scale)


def expected_average_spend(
    params: GammaGammaParams, frequency: npt.ArrayLike, monetary: npt.ArrayLike
) -> FloatArray:
    """Expected spend per future purchase: a weighted average of the population mean and the
    customer's own mean, which weighs more the more repeat purchases they made. Customers
    without repeats get the population mean ``p * gamma / (q - 1)``."""
    x, m = _floats(frequency), _floats(monetary)
    p, q, gamma = params.p, params.q, params.gamma
    denominator = p * x + q - 1
    if np.any(denominator <= 0):
        raise ValueError(
            f"the Gamma-Gamma mean spend is infinite for q = {q:.4g} <= 1 and few purchases"
        )
    result: FloatArray = (gamma + m * x) * p / denominator
    return result


def clv(
    model: CustomerValueModel,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
    monetary: npt.ArrayLike,
    *,
    months: int = CLV_MONTHS,
    monthly_discount_rate: float = DEFAULT_MONTHLY_DISCOUNT_RATE,
) -> FloatArray:
    """Discounted value of each customer over the next ``months`` months.

    Month i (of 30 days, in the model's time unit) contributes the expected purchases in that
    month times the expected spend per purchase, divided by (1 + rate)^i: revenue next year is
    worth less than revenue now.
    """
    if months < 0:
        raise ValueError(f"months must not be negative, got {months}")
    if not (math.isfinite(monthly_discount_rate) and monthly_discount_rate > -1):
        raise ValueError(f"the monthly discount rate must exceed -1, got {monthly_discount_rate}")
    month = DAYS_PER_MONTH / model.time_unit_days
    spend = expected_average_spend(model.gamma_gamma, frequency, monetary)
    total = np.zeros_like(spend)
    purchases_so_far = np.zeros_like(spend)
    for i in range(1, months + 1):
        purchases = expected_purchases(model.bgnbd, i * month, frequency, recency, age)
        total += spend * (purchases - purchases_so_far) / (1 + monthly_discount_rate) ** i
        purchases_so_far = purchases
    return total


def fit_customer_value(
    summaries: Sequence[CustomerSummary], *, time_unit_days: float = 7.0
) -> CustomerValueModel:
    """Fit BG/NBD on every customer and Gamma-Gamma on the repeat customers.

    ``time_unit_days`` must be the unit the summaries were made with (see ``summarize``).
    """
    x, t_x, age, m = _columns(summaries)
    return CustomerValueModel(
        bgnbd=fit_bgnbd(x, t_x, age),
        gamma_gamma=fit_gamma_gamma(x, m),
        time_unit_days=time_unit_days,
        customers=len(summaries),
        repeat_customers=int(np.count_nonzero(x > 0)),
    )


def score_customers(
    summaries: Sequence[CustomerSummary],
    model: CustomerValueModel,
    *,
    monthly_discount_rate: float = DEFAULT_MONTHLY_DISCOUNT_RATE,
) -> dict[str, CustomerScores]:
    """Scores per customer id, from summaries made as of now (``T`` = time since the first
    purchase until now) with the model's time unit."""
    if not summaries:
        return {}
    x, t_x, age, m = _columns(summaries)
    days = model.time_unit_days
    alive = p_alive(model.bgnbd, x, t_x, age)
    next_30 = expected_purchases(model.bgnbd, 30.0 / days, x, t_x, age)
    next_90 = expected_purchases(model.bgnbd, 90.0 / days, x, t_x, age)
    value = clv(model, x, t_x, age, m, monthly_discount_rate=monthly_discount_rate)
    return {
        summary.customer_id: CustomerScores(
            p_alive=float(alive[i]),
            expected_purchases_30d=float(next_30[i]),
            expected_purchases_90d=float(next_90[i]),
            clv_12m=float(value[i]),
        )
        for i, summary in enumerate(summaries)
    }


def _columns(
    summaries: Sequence[CustomerSummary],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    x = _floats([s.frequency for s in summaries])
    t_x = _floats([s.recency for s in summaries])
    age = _floats([s.T for s in summaries])
    m = _floats([s.monetary for s in summaries])
    return x, t_x, age, m


def _check_histories(x: FloatArray, t_x: FloatArray, age: FloatArray) -> None:
    if not (x.shape == t_x.shape == age.shape) or x.ndim != 1:
        raise ValueError("frequency, recency and age must be one-dimensional and of one length")
    if x.size == 0:
        raise ValueError("there are no customers to fit on")
    if not (np.all(np.isfinite(t_x)) and np.all(np.isfinite(age))):
        raise ValueError("recency and age must be finite")
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must count repeat purchases (whole numbers from 0)")
    if np.any(t_x < 0) or np.any(t_x > age):
        raise ValueError("recency must lie between 0 and age")


def _aggregate(*columns: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Identical customers once each, with how many there are: the likelihood is a weighted
    sum, so this changes no estimate and makes each evaluation cheaper."""
    rows, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return rows.T.astype(np.float64), counts.astype(np.float64)


def _maximise(
    negative_log_likelihood: Callable[[FloatArray], float], size: int, model: str
) -> tuple[float, ...]:
    """Minimise over log-parameters from all-ones; Nelder-Mead, then a quasi-Newton polish."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * size
    start = np.zeros(size)
    coarse = minimize(
        negative_log_likelihood,
        start,
        method="Nelder-Mead",
        bounds=bounds,
        options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 20_000, "maxfev": 20_000},
    )
    fine = minimize(negative_log_likelihood, coarse.x, method="L-BFGS-B", bounds=bounds)
    best = fine if fine.fun <= coarse.fun else coarse
    log_params = np.asarray(best.x, dtype=np.float64)
    if not np.all(np.isfinite(log_params)) or np.any(np.abs(log_params) > _LOG_BOUND - 1):
        raise ValueError(
            f"the {model} fit did not converge: the data do not determine its parameters"
        )
    return tuple(float(v) for v in np.exp(log_params))
