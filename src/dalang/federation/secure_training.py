"""What a site does to its update before it leaves: clipping, local noise, budget, masking.

Never trust the coordinator: the site itself clips its update, adds local-DP noise, works out
the epsilon a round costs (from its own accountant, not a figure the coordinator sends) and
charges its persistent budget, refusing to train once the budget is spent. Under secure
aggregation it keeps one :class:`~dalang.learn.secagg.SecAggClient` per masking session
between the four exchanges of a round (``secagg_keys``, ``secagg_shares``, the masked
``train``, ``secagg_unmask``) and sends only masked integer vectors.

Examples
--------
>>> import numpy as np
>>> delta = update_delta([np.zeros(2)], [np.array([3.0, 4.0])])
>>> clipped_delta(delta, 1.0).round(2).tolist()
[0.6, 0.8]
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dalang.errors import InvalidPlan, PolicyViolation, UpdateRejected
from dalang.federation.config import Policy
from dalang.federation.privacy import BudgetLedger, new_rng
from dalang.federation.training import TrainRequest, Weights

#: How long a masking session waits for its next step (a prepared session waits through a
#: whole round of training), and how many a site keeps at once.
SESSION_TTL_S = 3600.0
MAX_SESSIONS = 64
_SESSION_CHARS = frozenset("0123456789abcdef")


# ---- the update as one vector ---------------------------------------------------------
def update_delta(weights: Weights, new: Weights) -> np.ndarray[Any, Any]:
    """``new - weights`` over every tensor, flattened into one float64 vector.

    The site checks its own trainer's output as the coordinator would (tensor count, shapes,
    dtypes, finite values): under secure aggregation nobody else can.
    """
    from dalang.learn.validation import validate_update

    try:
        validate_update(new, weights)
    except UpdateRejected as e:
        raise UpdateRejected(f"the site's own update is not sent: {e.reason}") from None
    parts = [
        np.subtract(n, w, dtype=np.float64).reshape(-1) for w, n in zip(weights, new, strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def clipped_delta(delta: np.ndarray[Any, Any], clip: float) -> np.ndarray[Any, Any]:
    """``delta`` scaled down to an L2 norm of at most ``clip``."""
    norm = float(np.linalg.norm(delta))
    return delta * (clip / norm) if norm > clip else delta


def weights_plus(weights: Weights, delta: np.ndarray[Any, Any]) -> Weights:
    """``weights + delta`` with ``delta`` cut back into the tensors' shapes and dtypes."""
    out: Weights = []
    at = 0
    for w in weights:
        part = delta[at : at + w.size].reshape(w.shape)
        out.append((w.astype(np.float64) + part).astype(w.dtype))
        at += w.size
    return out


# ---- differential privacy ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DPRequest:
    """The ``dp`` part of a training request, checked."""

    mode: str
    noise_multiplier: float
    clip: float
    delta: float

    @classmethod
    def from_request(cls, request: TrainRequest) -> DPRequest | None:
        if request.dp is None:
            return None
        from dalang.learn.dp import training_dp_from_json

        try:
            option = training_dp_from_json(request.dp)
        except ValueError as e:
            raise InvalidPlan(f"the training request's dp option is malformed: {e}") from None
        return cls(option.mode, option.noise_multiplier, option.clip, option.delta)


def round_epsilon(dp: DPRequest, step: int) -> float:
    """What the ``step``-th DP round of one run costs: ``eps(step) - eps(step - 1)``.

    The site's own accountant at the request's noise multiplier and delta (every site takes
    part in every round, so the sampling rate is 1). A coordinator that starts a new run for
    every round only makes each round cost the most, ``eps(1)``.
    """
    from dalang.learn.dp import Accountant

    accountant = Accountant(noise_multiplier=dp.noise_multiplier, sampling_rate=1.0, delta=dp.delta)
    before = accountant.step(step - 1).epsilon() if step > 1 else 0.0
    return max(0.0, accountant.step(1).epsilon() - before)


def charge_training(
    ledger: BudgetLedger,
    request: TrainRequest,
    datasets: Sequence[str],
    policies: Mapping[str, Policy],
    *,
    check_only: bool = False,
) -> float:
    """Charge one training round to the budget of every dataset read that has one.

    A dataset whose egress is ``dp`` trains only under DP. Raises BudgetExhausted (nothing
    charged) once a budget cannot pay for the round; returns the epsilon charged.
    ``check_only``: raise as a charge would, charge nothing (a site refusing a round early).
    """
    dp = DPRequest.from_request(request)
    budgeted = sorted({d for d in datasets if policies[d].epsilon_budget is not None})
    for name in sorted(set(datasets)):
        policy = policies[name]
        if dp is None and policy.egress == "dp":
            raise PolicyViolation(
                f"dataset {name!r} lets only differentially private results leave "
                "(egress 'dp'); train with dp=learn.CentralDP(...) or learn.LocalDP(...)",
                dataset=name,
                policy=policy.egress,
            )
        if dp is not None and policy.delta is not None and dp.delta > policy.delta:
            raise PolicyViolation(
                f"dataset {name!r} allows delta up to {policy.delta:g}, the run asks {dp.delta:g}",
                dataset=name,
                policy=policy.egress,
            )
    if dp is None or not budgeted:
        return 0.0
    request_id = f"train:{request.run}" if request.run else "train"
    step = 1 + max(ledger.count(d, request_id) for d in budgeted)
    epsilon = round_epsilon(dp, step)
    for name in budgeted:  # check all before charging any
        budget = policies[name].epsilon_budget
        assert budget is not None
        ledger.check(name, epsilon, budget=budget)
    if check_only:
        return epsilon
    for name in budgeted:
        budget = policies[name].epsilon_budget
        assert budget is not None
        ledger.charge(name, epsilon, budget=budget, request_id=request_id)
    return epsilon


def can_train(
    ledger: BudgetLedger,
    request: TrainRequest,
    datasets: Sequence[str],
    policies: Mapping[str, Policy],
) -> bool:
    """Whether the budgets could pay for one more round of this run."""
    try:
        charge_training(ledger, request, datasets, policies, check_only=True)
    except PolicyViolation:
        return False
    return True


def private_update(weights: Weights, new: Weights, dp: DPRequest | None) -> Weights:
    """The weights a site sends without secure aggregation: clipped (and noised, local DP)."""
    if dp is None:
        return new
    delta = clipped_delta(update_delta(weights, new), dp.clip)
    if dp.mode == "local":
        delta = delta + new_rng().normal(0.0, dp.noise_multiplier * dp.clip, size=delta.shape)
    return weights_plus(weights, delta)


# ---- secure aggregation -----------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 1 << 20:
        raise InvalidPlan(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InvalidPlan(f"{what} is not valid base64") from None


def _id_map(value: Any, what: str) -> dict[int, bytes]:
    if not isinstance(value, dict) or len(value) > 100_000:
        raise InvalidPlan(f"{what} must be an object from client ids to base64 text")
    out = {}
    for k, v in value.items():
        if not (isinstance(k, str) and k.isdigit() and len(k) < 11):
            raise InvalidPlan(f"{what} has a key that is not a client id")
        out[int(k)] = _unb64(v, what)
    return out


def _ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 - 1 for v in value
    ):
        raise InvalidPlan(f"{what} must be a list of client ids")
    return list(value)


@dataclass
class _Session:
    client: Any  # SecAggClient
    num_examples: int
    created: float
    step: str


class MaskingSessions:
    """The site's masking sessions (one per round it takes part in), by session id."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def _take(
        self, request: TrainRequest, expected: str, spec: dict[str, Any] | None = None
    ) -> tuple[str, _Session]:
        spec = (request.secagg or {}) if spec is None else spec
        sid = spec.get("session")
        if not isinstance(sid, str) or len(sid) != 32 or not set(sid) <= _SESSION_CHARS:
            raise InvalidPlan("'secagg.session' must be 32 lower-case hex digits")
        with self._lock:
            self._expire()
            session = self._sessions.get(sid)
        if session is None:
            raise InvalidPlan(
                "no masking session "
                f"{sid[:8]}... at this site (it expired, or the keys step never ran)"
            )
        if session.step != expected:
            raise InvalidPlan(
                f"masking step out of order: this session expects {session.step!r} next"
            )
        session.created = time.monotonic()  # the wait is counted from the last step
        return sid, session

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if now - v.created > SESSION_TTL_S]:
            del self._sessions[sid]

    def advertise(
        self,
        request: TrainRequest,
        *,
        num_examples: int,
        spec: dict[str, Any] | None = None,
        round: int | None = None,
    ) -> dict[str, Any]:
        """``secagg_keys``: a new client for this round; its two public keys.

        ``spec`` and ``round``: a session for the next round, asked for with this round's
        unmasking (so that a round costs three exchanges, not four).
        """
        from dalang.learn.secagg import SecAggClient, SecAggParams

        spec = (request.secagg or {}) if spec is None else spec
        round = request.round if round is None else round
        sid = spec.get("session")
        if not isinstance(sid, str) or len(sid) != 32 or not set(sid) <= _SESSION_CHARS:
            raise InvalidPlan("'secagg.session' must be 32 lower-case hex digits")
        try:
            client_id = int(spec["id"])
            threshold = int(spec["threshold"])
            clip, bits, modulus = float(spec["clip"]), int(spec["bits"]), int(spec["modulus_bits"])
            params = SecAggParams(
                threshold=threshold, clip=clip, bits=bits, modulus_bits=modulus, round=round
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidPlan(f"the secure aggregation parameters are malformed ({e})") from None
        if threshold < 2 or not math.isfinite(clip) or clip <= 0:
            # with one share holder the coordinator could rebuild this site's self mask alone
            raise InvalidPlan("secure aggregation needs a threshold of at least 2 and clip > 0")
        dp = DPRequest.from_request(request)
        if dp is not None and dp.mode == "central":
            num_examples = 1  # central DP averages the sites unweighted (one site, one vote)
        try:
            client = SecAggClient(client_id, params)
        except ValueError as e:
            raise InvalidPlan(f"the secure aggregation parameters are malformed ({e})") from None
        with self._lock:
            self._expire()
            if sid in self._sessions:
                raise InvalidPlan("this masking session has already started")
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.popitem(last=False)
            self._sessions[sid] = _Session(client, num_examples, time.monotonic(), "shares")
        return {"keys": _b64(client.advertise_keys()), "num_examples": num_examples}

    def share(self, request: TrainRequest, *, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """``secagg_shares``: encrypted Shamir shares of this site's secrets, per neighbour.

        ``spec``: the next round's session and key list, sent with this round's unmasking.
        """
        from dalang.learn.secagg import SecAggError

        spec = (request.secagg or {}) if spec is None else spec
        _, session = self._take(request, "shares", spec)
        keys = _id_map(spec.get("keys"), "'secagg.keys'")
        threshold = session.client.params.threshold
        if 2 * threshold <= len(keys):
            # below a majority, a coordinator could ask some sites for self-mask shares and
            # others for mask-key shares of the same client, and unmask its update
            raise InvalidPlan(f"threshold {threshold} is not above half of the {len(keys)} clients")
        try:
            ciphertexts = session.client.share_keys(keys)
        except (SecAggError, ValueError) as e:
            raise InvalidPlan(f"secure aggregation refused the key list: {e}") from None
        session.step = "masked"
        return {"shares": {str(k): _b64(v) for k, v in ciphertexts.items()}}

    def masked(
        self,
        request: TrainRequest,
        weights: Weights,
        new: Weights,
        dp: DPRequest | None,
        *,
        num_examples: int,
        join_next: bool = True,
    ) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
        """The masked ``train``: the clipped update, weighted, quantised and masked.

        With ``secagg.next`` (the keys step of round + 1, a new session), also the keys of
        that session: ``(masked update, {"next": keys} or {})``; not when ``join_next`` is
        false (the site will not take part in the next round, e.g. its budget is spent).
        """
        from dalang.learn.secagg import SecAggError

        _, session = self._take(request, "masked")
        spec = request.secagg or {}
        try:
            session.client.receive_shares(_id_map(spec.get("shares"), "'secagg.shares'"))
        except SecAggError as e:
            raise InvalidPlan(f"secure aggregation refused the shares: {e}") from None
        scale = spec.get("scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise InvalidPlan("'secagg.scale' must be a positive number (total examples)")
        clip = session.client.params.clip
        if dp is not None:
            clip = min(clip, dp.clip)
        delta = clipped_delta(update_delta(weights, new), clip)
        if dp is not None and dp.mode == "local":
            delta = delta + new_rng().normal(0.0, dp.noise_multiplier * dp.clip, size=delta.shape)
            delta = np.clip(delta, -session.client.params.clip, session.client.params.clip)
        delta = delta * min(1.0, session.num_examples / float(scale))
        session.step = "unmask"  # one masked update per session, whatever happens next
        out: np.ndarray[Any, Any] = session.client.masked_update(delta)
        following = spec.get("next")
        if following is None or not join_next:
            return out, {}
        if not isinstance(following, dict) or following.get("session") == spec.get("session"):
            raise InvalidPlan("'secagg.next' must start a new session")
        keys = self.advertise(
            request, num_examples=num_examples, spec=following, round=request.round + 1
        )
        return out, {"next": keys}

    def unmask(self, request: TrainRequest, *, num_examples: int) -> tuple[dict[str, Any], Weights]:
        """``secagg_unmask``: shares of survivors' self-mask seeds and dropped sites' keys, and
        this site's correction (its masks that will not cancel) as the reply's one tensor.

        With ``secagg.next`` (the next round's session and its key list), this site's
        encrypted shares for that session too (its shares step, done ahead).
        """
        from dalang.learn.secagg import SecAggError

        sid, session = self._take(request, "unmask")
        spec = request.secagg or {}
        survivors = _ids(spec.get("survivors"), "'secagg.survivors'")
        dropped = _ids(spec.get("dropped"), "'secagg.dropped'")
        with self._lock:
            self._sessions.pop(sid, None)  # never answer twice: two answers could unmask
        try:
            shares, correction = session.client.unmask(survivors, dropped)
        except SecAggError as e:
            raise InvalidPlan(f"secure aggregation refused to unmask: {e}") from None
        out: dict[str, Any] = {"shares": {str(k): _b64(v) for k, v in shares.items()}}
        following = spec.get("next")
        if following is not None:
            if not isinstance(following, dict) or following.get("session") == sid:
                raise InvalidPlan("'secagg.next' must name the next round's session")
            out["next"] = self.share(request, spec=following)
        return out, [correction]
