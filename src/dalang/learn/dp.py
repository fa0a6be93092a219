"""Differential privacy for training: clipping at the site, Gaussian noise, and the accountant.

Central DP clips each site's update to an L2 norm of ``clip`` and adds Gaussian noise of
standard deviation ``noise_multiplier * clip / n`` to the mean of ``n`` updates. Local DP adds
noise of standard deviation ``noise_multiplier * clip`` at the site before anything leaves it.
The :class:`Accountant` turns rounds into (epsilon, delta): Rényi DP of the Poisson-sampled
Gaussian mechanism (Mironov et al. 2019), through ``dp-accounting`` when it is installed
(``pip install 'dalang[learn]'``) and a built-in implementation of the same bound otherwise;
``method="pld"`` (privacy loss distributions, tighter) needs ``dp-accounting``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from dalang.errors import PlatformUnavailable

__all__ = [
    "DEFAULT_ORDERS",
    "Accountant",
    "CentralDP",
    "LocalDP",
    "TrainingDP",
    "add_central_noise",
    "central_noise_std",
    "clip_update",
    "global_norm",
    "local_dp",
    "rdp_epsilon",
    "rdp_sampled_gaussian",
    "training_dp_from_json",
]

Arrays = list[np.ndarray[Any, Any]]

DEFAULT_ORDERS: tuple[float, ...] = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *range(11, 64),
    128,
    256,
    512,
    1024,
)
"""The Rényi orders tried, the same as dp-accounting's, so both give the same epsilon."""


# ---------------------------------------------------------------------------------------------
# Clipping and noise


def global_norm(update: Sequence[np.ndarray[Any, Any]]) -> float:
    """The L2 norm of all the tensors of an update taken together."""
    return math.sqrt(sum(float(np.vdot(t, t).real) for t in update))


def clip_update(update: Sequence[np.ndarray[Any, Any]], clip: float) -> tuple[Arrays, float]:
    """Scale ``update`` down to an L2 norm of at most ``clip``; return it and its norm before.

    Examples
    --------
    >>> clipped, norm = clip_update([np.array([3.0, 4.0])], 1.0)
    >>> norm, clipped[0].tolist()
    (5.0, [0.6, 0.8])
    """
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    norm = global_norm(update)
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return [np.asarray(t) * np.asarray(factor, dtype=np.asarray(t).dtype) for t in update], norm


def central_noise_std(noise_multiplier: float, clip: float, n: int) -> float:
    """The standard deviation of the noise on the mean of ``n`` updates clipped to ``clip``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return noise_multiplier * clip / n


def _noisy(update: Sequence[np.ndarray[Any, Any]], std: float, rng: np.random.Generator) -> Arrays:
    out: Arrays = []
    for t in update:
        a = np.asarray(t)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        out.append((a + rng.normal(0.0, std, size=a.shape)).astype(dtype, copy=False))
    return out


def add_central_noise(
    mean_update: Sequence[np.ndarray[Any, Any]],
    *,
    noise_multiplier: float,
    clip: float,
    n: int,
    rng: np.random.Generator | int | None = None,
) -> Arrays:
    """Central DP at aggregation: Gaussian noise of std ``noise_multiplier * clip / n`` on the mean.

    The ``n`` updates averaged must each have been clipped to ``clip`` (:func:`clip_update`).
    """
    return _noisy(
        mean_update, central_noise_std(noise_multiplier, clip, n), np.random.default_rng(rng)
    )


def local_dp(
    update: Sequence[np.ndarray[Any, Any]],
    *,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator | int | None = None,
) -> Arrays:
    """Local DP at the site: clip to ``clip``, then add noise of std ``noise_multiplier * clip``.

    Examples
    --------
    >>> noisy = local_dp([np.zeros(4)], clip=1.0, noise_multiplier=1.0, rng=0)
    >>> noisy[0].shape
    (4,)
    """
    clipped, _ = clip_update(update, clip)
    return _noisy(clipped, noise_multiplier * clip, np.random.default_rng(rng))


# ---------------------------------------------------------------------------------------------
# Built-in RDP of the Poisson-sampled Gaussian (Mironov, Talwar, Zhang 2019)


def _log_add(a: float, b: float) -> float:
    lo, hi = min(a, b), max(a, b)
    if lo == -math.inf:
        return hi
    return math.log1p(math.exp(lo - hi)) + hi


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_erfc(x: float) -> float:
    if x < 25.0:
        return math.log(math.erfc(x))
    # asymptotic series, exact to double precision this far out
    x2 = x * x
    return (
        -x2 - math.log(x) - 0.5 * math.log(math.pi) + math.log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2))
    )


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    log_q, log_1mq = math.log(q), math.log1p(-q)
    for i in range(alpha + 1):
        term = (
            _log_comb(alpha, i) + i * log_q + (alpha - i) * log_1mq + (i * i - i) / (2 * sigma**2)
        )
        log_a = _log_add(log_a, term)
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0 = log_a1 = -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_q, log_1mq = math.log(q), math.log1p(-q)
    last0 = last1 = -math.inf
    for i in range(1000):
        coef = _log_comb(alpha, i)
        j = alpha - i
        s0 = (
            coef + i * log_q + j * log_1mq + (i * i - i) / (2 * sigma**2)
            + math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        )  # fmt: skip
        s1 = (
            coef + j * log_q + i * log_1mq + (j * j - j) / (2 * sigma**2)
            + math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        )  # fmt: skip
        log_a0, log_a1 = _log_add(log_a0, s0), _log_add(log_a1, s1)
        total = _log_add(log_a0, log_a1)
        if s0 < last0 and s1 < last1 and max(s0, s1) < total - 30:
            return total
        last0, last1 = s0, s1
    return math.inf


def rdp_sampled_gaussian(
    q: float, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> list[float]:
    """RDP of one step of the Gaussian mechanism with Poisson sampling rate ``q``, per order."""
    if not 0 <= q <= 1:
        raise ValueError(f"the sampling rate must be in [0, 1], got {q}")
    if noise_multiplier < 0:
        raise ValueError(f"the noise multiplier must be non-negative, got {noise_multiplier}")
    out: list[float] = []
    for alpha in orders:
        if q == 0:
            out.append(0.0)
        elif noise_multiplier == 0 or math.isinf(alpha):
            out.append(math.inf)
        elif q == 1.0:
            out.append(alpha / (2 * noise_multiplier**2))
        elif float(alpha).is_integer():
            out.append(_log_a_int(q, noise_multiplier, int(alpha)) / (alpha - 1))
        else:
            out.append(_log_a_frac(q, noise_multiplier, alpha) / (alpha - 1))
    return out


def rdp_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float) -> float:
    """The smallest epsilon at ``delta`` over the orders (Balle et al. 2020, Proposition 12)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    best = math.inf
    for a, r in zip(orders, rdp, strict=True):
        if r < 0 or delta**2 + math.expm1(-r) > 0:
            return 0.0
        if a > 1.01:
            best = min(best, r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return max(0.0, best)


# ---------------------------------------------------------------------------------------------
# The accountant


def _has_dp_accounting() -> bool:
    return importlib.util.find_spec("dp_accounting") is not None


@dataclass
class Accountant:
    """Privacy spent by rounds of the sampled Gaussian mechanism, as (epsilon, delta).

    ``sampling_rate`` is the chance each record (or site, for user-level DP) takes part in a
    round. ``method``: ``"rdp"`` or ``"pld"``. ``backend``: ``"auto"`` (dp-accounting when
    installed), ``"dp_accounting"`` or ``"builtin"`` (RDP only).

    Examples
    --------
    >>> acc = Accountant(noise_multiplier=1.1, sampling_rate=0.01, delta=1e-5, backend="builtin")
    >>> round(acc.step(1000).epsilon(), 2)
    1.71
    """

    noise_multiplier: float
    sampling_rate: float = 1.0
    delta: float = 1e-5
    method: Literal["rdp", "pld"] = "rdp"
    backend: Literal["auto", "dp_accounting", "builtin"] = "auto"
    steps: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.method not in ("rdp", "pld"):
            raise ValueError(f"method must be 'rdp' or 'pld', got {self.method!r}")
        if self.backend not in ("auto", "dp_accounting", "builtin"):
            raise ValueError(
                f"backend must be 'auto', 'dp_accounting' or 'builtin', got {self.backend!r}"
            )
        if not 0 <= self.sampling_rate <= 1:
            raise ValueError(f"the sampling rate must be in [0, 1], got {self.sampling_rate}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        wants_library = self.backend == "dp_accounting" or self.method == "pld"
        if wants_library and not _has_dp_accounting():
            raise PlatformUnavailable("dp-accounting", "learn")
        if self.method == "pld" and self.backend == "builtin":
            raise ValueError("the built-in accountant does RDP only; use method='rdp'")
        self._rdp_step: list[float] | None = None

    @property
    def uses_library(self) -> bool:
        """Whether dp-accounting computes the figures (else the built-in RDP does)."""
        return (
            self.backend == "dp_accounting"
            or self.method == "pld"
            or (self.backend == "auto" and _has_dp_accounting())
        )

    def step(self, n: int = 1) -> Accountant:
        """Charge ``n`` more rounds; returns the accountant."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        self.steps += n
        return self

    def epsilon(self, delta: float | None = None) -> float:
        """The epsilon spent so far, at ``delta`` (the accountant's own by default)."""
        d = self.delta if delta is None else delta
        if self.steps == 0:
            return 0.0
        if self.uses_library:
            return self._library_epsilon(d)
        if self._rdp_step is None:
            self._rdp_step = rdp_sampled_gaussian(self.sampling_rate, self.noise_multiplier)
        return rdp_epsilon(DEFAULT_ORDERS, [r * self.steps for r in self._rdp_step], d)

    def spent(self) -> tuple[float, float]:
        """(epsilon, delta) so far."""
        return self.epsilon(), self.delta

    def _library_epsilon(self, delta: float) -> float:
        import dp_accounting  # type: ignore[import-untyped,unused-ignore]

        event = dp_accounting.PoissonSampledDpEvent(
            self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
        )
        accountant: Any
        if self.method == "pld":
            accountant = dp_accounting.pld.PLDAccountant()
        else:
            accountant = dp_accounting.rdp.RdpAccountant(list(DEFAULT_ORDERS))
        accountant.compose(event, self.steps)
        return float(accountant.get_epsilon(delta))


# ---------------------------------------------------------------------------------------------
# The dp= option of fed.train


@dataclass(frozen=True)
class TrainingDP:
    """Differential privacy for ``fed.train(..., dp=...)``: :class:`CentralDP` or :class:`LocalDP`.

    Each site clips its update (``weights - global``) to L2 norm ``clip``; the Gaussian noise
    has std ``noise_multiplier * clip`` on the sum of the updates (central) or on each update
    (local). Every site takes part in every round, so each round is one Gaussian mechanism at
    the site level (sampling rate 1), and :meth:`accountant` counts epsilon at ``delta``.
    """

    noise_multiplier: float
    clip: float
    delta: float = 1e-5
    mode = "central"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0 or not math.isfinite(self.noise_multiplier):
            raise ValueError(f"noise_multiplier must be positive, got {self.noise_multiplier}")
        if not self.clip > 0 or not math.isfinite(self.clip):
            raise ValueError(f"clip must be positive, got {self.clip}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    def accountant(self) -> Accountant:
        """An accountant for rounds of this mechanism (no round charged yet)."""
        return Accountant(
            noise_multiplier=self.noise_multiplier, sampling_rate=1.0, delta=self.delta
        )

    def to_json(self) -> dict[str, Any]:
        """What travels to the sites in every training request."""
        return {
            "mode": self.mode,
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "delta": self.delta,
        }


@dataclass(frozen=True)
class CentralDP(TrainingDP):
    """Central DP: sites clip, the coordinator adds noise of std ``noise_multiplier * clip / n``
    to the mean of ``n`` updates.

    Examples
    --------
    >>> round(CentralDP(noise_multiplier=1.0, clip=1.0).accountant().step(10).epsilon(), 1)
    19.1
    """

    mode = "central"


@dataclass(frozen=True)
class LocalDP(TrainingDP):
    """Local DP: each site clips and adds noise of std ``noise_multiplier * clip`` itself, so
    not even the coordinator sees an update without noise."""

    mode = "local"


def training_dp_from_json(doc: Any) -> TrainingDP:
    """The option a site received; raises ValueError for anything malformed."""
    if not isinstance(doc, dict):
        raise ValueError("'dp' must be an object")
    kinds: dict[Any, type[TrainingDP]] = {"central": CentralDP, "local": LocalDP}
    kind = kinds.get(doc.get("mode"))
    if kind is None:
        raise ValueError("'dp.mode' must be 'central' or 'local'")
    values = [doc.get(k) for k in ("noise_multiplier", "clip", "delta")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError("'dp' needs numbers noise_multiplier, clip and delta")
    return kind(noise_multiplier=float(values[0]), clip=float(values[1]), delta=float(values[2]))  # type: ignore[arg-type]
