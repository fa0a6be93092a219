"""One round of secure aggregation over real sites: the coordinator's side of the masking.

The coordinator routes the sites' public keys and encrypted shares, sums masked integer
vectors and, with the shares the survivors send back, removes the masks: it learns the
weighted mean of the updates and nothing about any one of them. Four steps per round, two
exchanges after the first round (the next round's step 1 rides on step 3, its step 2 on step 4):

1. ``secagg_keys``: each site starts a session, sends two X25519 public keys and its
   example count (the weights of the mean); fresh keys every round.
2. ``secagg_shares``: each site gets every key, returns Shamir shares of its secrets
   encrypted for each neighbour.
3. ``train`` with ``secagg``: each site gets the global weights and the shares addressed to
   it, trains, clips ``update - global`` to the round's clip, weights it by its share of the
   examples, quantises and masks it.
4. ``secagg_unmask``: the sites whose masked update arrived send their correction (their own
   masks that will not cancel: the self mask and the pairwise masks with sites that dropped
   before step 3) as one tensor, the shares that remove those masks for a site that answers
   no more (self masks of survivors, mask keys of sites that dropped before step 3), and
   their shares for the next round.

A site that drops at any step is left out; the sum survives while ``threshold`` sites answer
step 4. Strategies that need each update (median, Krum, trimmed mean) cannot run on a sum.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dalang.errors import FederationError, PlanError, PolicyViolation
from dalang.learn.types import Weights

#: Fixed-point bits per element in the 64-bit ring (error <= clip / 2**bits per site).
SECAGG_BITS = 40

Call = Callable[[str, dict[str, Any], Weights], Callable[[], Any]]
Parallel = Callable[
    [Mapping[str, Callable[[], Any]]], tuple[dict[str, Any], dict[str, BaseException | None]]
]


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy that needs the individual updates (they stay masked)."""
    from dalang.learn.strategies import DPFixedClipping

    if isinstance(strategy, DPFixedClipping):
        raise PlanError(
            "DPFixedClipping clips updates at the coordinator, which cannot see them under "
            "secure aggregation; use fed.train(..., secure_aggregation=True, "
            "dp=learn.CentralDP(noise_multiplier=..., clip=...)) with the strategy inside it: "
            "the sites clip, the coordinator adds the noise to the sum"
        )
    if getattr(strategy, "aggregates_mean", None) is not True:
        raise PlanError(
            f"{type(strategy).__name__} needs every site's own update, but secure aggregation "
            "reveals only their sum; use an averaging strategy (FedAvg, FedProx, FedAvgM, "
            "FedAdam, FedYogi, FedAdagrad), train with secure_aggregation=False, or set "
            "aggregates_mean = True on a strategy of your own that needs only the weighted mean"
        )


def threshold_for(n: int) -> int:
    """Shares needed per secret: a strict majority of the ``n`` sites, at least 2."""
    return max(2, n // 2 + 1)


@dataclass
class Prepared:
    """The next round's session, set up during this one: keys and shares already routed.

    ``server`` has every advertised key and the shares of ``shared``; ``counts`` the
    example counts of the sites that advertised.
    """

    session: str
    server: Any  # SecAggServer
    counts: dict[str, int]
    shared: list[str]


@dataclass
class SecureRound:
    """What one masked round produced: the mean update and who took part."""

    mean_delta: np.ndarray[Any, Any] | None
    survivors: list[str]
    num_examples: int
    dropped: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    next: Prepared | None = None
    failures: dict[str, BaseException | None] = field(default_factory=dict)

    def apply(self, weights: Weights) -> Weights:
        """``weights + mean_delta`` in the weights' shapes and dtypes."""
        from dalang.federation.secure_training import weights_plus

        return weights if self.mean_delta is None else weights_plus(weights, self.mean_delta)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise FederationError("a secure aggregation message is not base64 text")
    return base64.b64decode(value, validate=True)


def secure_round(
    *,
    sites: Sequence[str],
    request: Callable[[str, str, dict[str, Any]], dict[str, Any]],
    call: Call,
    parallel: Parallel,
    weights: Weights,
    round: int,
    clip: float,
    prepared: Prepared | None = None,
    prepare_next: bool = False,
) -> SecureRound:
    """Drive the exchanges of one masked round over ``sites``.

    ``request(site, kind, secagg)`` builds the site's request document for a step;
    ``call(site, doc, weights)`` the exchange; ``parallel`` runs exchanges at once and
    returns ``(answers, failures)``. Raises FederationError when fewer sites than the
    threshold get through a step (the sum cannot be unmasked).

    ``prepared``: this round's session, set up during the previous round (steps 1 and 2
    done); used unless a site outside it answers a keys exchange (then every site starts
    afresh). ``prepare_next``: set up the next round's session during this one, its keys
    with the masked updates and its shares with the unmasking (``SecureRound.next``), so
    that a round costs two exchanges per site.
    """
    from dalang.learn.secagg import SecAggError, SecAggParams, SecAggServer

    ids = {s: i for i, s in enumerate(sorted(sites))}
    by_id = {i: s for s, i in ids.items()}
    n = len(ids)
    if n < 2:
        raise PlanError(
            "secure aggregation needs at least 2 sites (the sum of one update is the update)"
        )
    threshold = threshold_for(n)
    bits = min(SECAGG_BITS, 63 - math.ceil(math.log2(n + 1)))
    out = SecureRound(None, [], 0)
    refused_errors = (PolicyViolation,)

    def params(rnd: int) -> Any:
        return SecAggParams(threshold=threshold, clip=clip, bits=bits, modulus_bits=64, round=rnd)

    def start(session: str) -> dict[str, Any]:
        return {"session": session, "threshold": threshold, "clip": clip, "bits": bits,
                "modulus_bits": 64}  # fmt: skip

    def lose(failures: Mapping[str, BaseException | None]) -> None:
        for site, error in failures.items():
            out.failures[site] = error
            if isinstance(error, refused_errors):
                out.refused.append(site)
            else:
                out.dropped.append(site)

    def enough(alive: Sequence[str], step: str) -> None:
        if len(alive) < threshold:
            raise FederationError(
                f"round {round}: {len(alive)} site(s) got through the secure aggregation "
                f"{step} step, fewer than its threshold {threshold} of {n}; the masked sum "
                "cannot be opened (lower the dropouts, or train with more sites); "
                + "; ".join(
                    f"{s}: {'timed out' if e is None else e}" for s, e in out.failures.items()
                ),
                retryable=True,
            )

    def take_keys(
        server: Any, offers: Mapping[str, Mapping[str, Any]], *, record: bool = True
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for site, doc in sorted(offers.items()):
            try:
                server.receive_keys(ids[site], _unb64(doc.get("keys")))
                counts[site] = max(0, int(doc.get("num_examples", 0)))
            except (SecAggError, ValueError, TypeError, FederationError) as e:
                if record:  # keys for the next round only leave that site out of it
                    lose({site: e})
        return counts

    def take_shares(server: Any, offers: Mapping[str, Mapping[str, Any]]) -> list[str]:
        shared = []
        for site, doc in sorted(offers.items()):
            try:
                routed = {int(k): _unb64(v) for k, v in dict(doc.get("shares", {})).items()}
                server.receive_shares(ids[site], routed)
                shared.append(site)
            except (SecAggError, ValueError, TypeError, FederationError) as e:
                lose({site: e})
        return shared

    # 1. keys: only from sites outside the prepared session; one that answers means a
    # site (re)joined, and the round starts afresh in the new session
    fresh = secrets.token_hex(16)
    missing = [s for s in sorted(ids) if prepared is None or s not in prepared.counts]
    answers, failures = parallel(
        {s: call(s, request(s, "secagg_keys", {**start(fresh), "id": ids[s]}), []) for s in missing}
    )
    lose(failures)
    if prepared is not None and not answers:
        session, server = prepared.session, prepared.server
        counts, shared = prepared.counts, prepared.shared
        lose({s: FederationError("its shares for this round did not arrive", site=s)
              for s in counts if s not in shared})  # fmt: skip
        enough(shared, "shares")
    else:
        session, server = fresh, SecAggServer(params(round))
        offers = {s: doc for s, (doc, _) in answers.items()}
        rest = [s for s in sorted(ids) if s not in offers and s not in failures]
        more, failures = parallel(
            {s: call(s, request(s, "secagg_keys", {**start(fresh), "id": ids[s]}), [])
             for s in rest}
        )  # fmt: skip
        lose(failures)
        counts = take_keys(server, {**offers, **{s: doc for s, (doc, _) in more.items()}})
        enough(sorted(counts), "keys")
        # 2. shares
        keys = {str(k): _b64(v) for k, v in server.keys().items()}
        answers, failures = parallel(
            {
                s: call(s, request(s, "secagg_shares", {"session": session, "keys": keys}), [])
                for s in sorted(counts)
            }
        )
        lose(failures)
        shared = take_shares(server, {s: doc for s, (doc, _) in answers.items()})
        enough(shared, "shares")
    # 3. masked updates (and the next round's keys)
    following = secrets.token_hex(16)
    scale = float(sum(counts[s] for s in shared)) or 1.0
    calls = {}
    for s in shared:
        addressed = {str(u): _b64(c) for u, c in server.shares_for(ids[s]).items()}
        spec: dict[str, Any] = {"session": session, "shares": addressed, "scale": scale}
        if prepare_next:
            spec["next"] = {**start(following), "id": ids[s]}
        calls[s] = call(s, request(s, "train", spec), weights)
    answers, failures = parallel(calls)
    lose(failures)
    ahead: dict[str, dict[str, Any]] = {}
    for site, (doc, masked) in sorted(answers.items()):
        try:
            if len(masked) != 1:
                raise FederationError(f"{len(masked)} masked tensors, expected 1")
            server.receive_masked(ids[site], masked[0])
        except (SecAggError, FederationError) as e:
            lose({site: e})
            continue
        out.metrics[site] = {k: float(v) for k, v in dict(doc.get("metrics", {})).items()}
        out.docs[site] = doc
        if prepare_next and isinstance(doc.get("next"), dict):
            ahead[site] = doc["next"]
    survivors_ids, dropped_ids = server.unmask_request() if out.metrics else ([], [])
    enough([by_id[i] for i in survivors_ids], "masked update")
    # 4. unmask (and the next round's shares)
    upcoming = SecAggServer(params(round + 1)) if prepare_next else None
    upcoming_counts = take_keys(upcoming, ahead, record=False) if upcoming is not None else {}
    spec = {"session": session, "survivors": survivors_ids, "dropped": dropped_ids}
    if upcoming is not None:
        keys = {str(k): _b64(v) for k, v in upcoming.keys().items()}
        spec["next"] = {"session": following, "keys": keys}
    unmask = {by_id[i]: request(by_id[i], "secagg_unmask", spec) for i in survivors_ids}
    answers, failures = parallel({s: call(s, doc, []) for s, doc in unmask.items()})
    for site, error in failures.items():  # their updates count: only their shares are missing
        out.failures[site] = error
    answered = []
    shares_ahead: dict[str, Any] = {}
    for site, (doc, tensors) in sorted(answers.items()):
        try:
            if len(tensors) > 1:
                raise FederationError(f"{len(tensors)} correction tensors, expected 1")
            shares = {int(k): _unb64(v) for k, v in dict(doc.get("shares", {})).items()}
            # no correction: this site's masks come off from the others' shares
            server.receive_unmask(ids[site], shares, tensors[0] if tensors else None)
            answered.append(site)
        except (SecAggError, ValueError, TypeError, FederationError) as e:
            out.failures[site] = e
            continue
        if isinstance(doc.get("next"), dict):
            shares_ahead[site] = doc["next"]
    enough(answered, "unmask")
    if upcoming is not None:
        shared_ahead = []
        for site, doc in sorted(shares_ahead.items()):  # a bad one only leaves that site out
            try:
                routed = {int(k): _unb64(v) for k, v in dict(doc.get("shares", {})).items()}
                upcoming.receive_shares(ids[site], routed)
                shared_ahead.append(site)
            except (SecAggError, ValueError, TypeError, FederationError):
                continue
        out.next = Prepared(following, upcoming, upcoming_counts, shared_ahead)
    total = server.aggregate()  # sum of n_i / scale * clipped delta_i over the survivors
    out.survivors = [by_id[i] for i in survivors_ids]
    out.num_examples = sum(counts[s] for s in out.survivors)
    out.mean_delta = total * (scale / max(out.num_examples, 1))
    return out
