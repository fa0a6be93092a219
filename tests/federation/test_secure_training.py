"""Secure aggregation inside fed.train over real site processes: the masked sum equals the plain
one, with sites dying before and after they send their masked update; strategies that need each
update are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _fed_train import train as _train
from test_training import COLUMNS, _configs, _digits

import dalang as dl
from dalang.errors import InvalidPlan, PlanError
from dalang.learn import secure_rounds
from dalang.learn.rounds import RoundConfig, site_plans

pytest.importorskip("sklearn")

SITES = 10
#: A mean of updates each quantised to within clip / (2**bits - 2), then cast to float32.
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pa.Table]]:
    root = tmp_path_factory.mktemp("digits10")
    return root, _digits(root, SITES)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


def _assert_close(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=0, atol=TOLERANCE)


def _dying(names: list[str], module: str) -> dict[str, dict[str, Any]]:
    return {name: {"udf_modules": [module]} for name in names}


@pytest.mark.parametrize("dying", [0, 1, 3], ids=["none", "one", "30%"])
def test_masked_sum_equals_plain_with_sites_dying_after_sending(
    ten: tuple[Path, list[pa.Table]], dying: int
) -> None:
    names = [f"s{k}" for k in range(SITES)]
    gone = names[SITES - dying :]
    with dl.Federation.local(_configs(ten[0], SITES, **_dying(gone, "_dying_site"))) as fed:
        plain = _train(fed, rounds=1)  # no unmasking step: the dying sites live through it
        secure = _train(fed, rounds=1, secure_aggregation=True)
        for site in gone:  # they died after their masked update arrived, before unmasking
            assert fed.processes[site].wait(10) == 17
        for site in names[: SITES - dying]:
            assert fed.processes[site].poll() is None
    assert secure.history[0].sites == names  # the dead sites' updates still count
    assert plain.history[0].sites == names
    _assert_close(secure.model.weights, plain.model.weights)
    assert secure.history[0].metrics["train_loss"] == pytest.approx(
        plain.history[0].metrics["train_loss"]
    )


def test_a_site_dying_before_its_masked_update_is_left_out(
    ten: tuple[Path, list[pa.Table]],
) -> None:
    configs = _configs(ten[0], 5, s4={"udf_modules": ["_vanishing_site"]})
    others = ["s0", "s1", "s2", "s3"]
    with dl.Federation.local(configs) as fed:
        plain = _train(fed, rounds=1, data=fed.table("digits", sites=others))
        secure = _train(fed, rounds=1, secure_aggregation=True)
        assert fed.processes["s4"].wait(10) == 17
        again = _train(fed, rounds=1, secure_aggregation=True)  # s4 is gone from the start
    assert secure.history[0].sites == others and secure.history[0].dropped == ["s4"]
    # its pairwise masks came off with the shares of its mask key it had handed out
    _assert_close(secure.model.weights, plain.model.weights)
    assert again.history[0].sites == others and again.history[0].dropped == ["s4"]
    _assert_close(again.model.weights, plain.model.weights)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("digits3")
    _digits(root, 3)
    with dl.Federation.local(_configs(root, 3)) as fed:
        yield fed


@pytest.mark.parametrize(
    "make",
    [
        lambda learn: learn.FedProx(mu=0.1),
        lambda learn: learn.FedAvgM(server_momentum=0.9),
        lambda learn: learn.FedAdam(eta=0.05),
        lambda learn: learn.FedYogi(),
        lambda learn: learn.FedAdagrad(eta=0.05),
    ],
    ids=["FedProx", "FedAvgM", "FedAdam", "FedYogi", "FedAdagrad"],
)
def test_every_averaging_strategy_gives_its_plain_result(three: Any, make: Any) -> None:
    from dalang import learn

    plain = _train(three, rounds=3, strategy=make(learn))
    secure = _train(three, rounds=3, strategy=make(learn), secure_aggregation=True)
    # adaptive optimisers divide by the update's size: zero stays exactly zero on the grid
    for x, y in zip(secure.model.weights, plain.model.weights, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-4)
    assert [r.sites for r in secure.history] == [["s0", "s1", "s2"]] * 3


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda learn: learn.FedMedian(), "FedMedian"),
        (lambda learn: learn.Krum(f=1), "Krum"),
        (lambda learn: learn.MultiKrum(f=1, m=2), "MultiKrum"),
        (lambda learn: learn.FedTrimmedAvg(beta=0.2), "FedTrimmedAvg"),
        (lambda learn: learn.FedBuff(buffer_size=2), "FedBuff"),
    ],
)
def test_strategies_that_need_each_update_are_refused(three: Any, make: Any, name: str) -> None:
    from dalang import learn

    with pytest.raises(PlanError, match=f"{name} needs every site's own update"):
        _train(three, rounds=1, strategy=make(learn), secure_aggregation=True)


def test_fixed_clipping_at_the_coordinator_is_refused_with_the_way_out(three: Any) -> None:
    from dalang import learn

    wrapped = learn.DPFixedClipping(learn.FedAvg(), noise_multiplier=1.0, clip=1.0)
    with pytest.raises(PlanError, match=r"dp=learn.CentralDP"):
        _train(three, rounds=1, strategy=wrapped, secure_aggregation=True)


def test_no_masked_update_reveals_the_update(three: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the coordinator receives from each site looks uniform, unrelated to the update: the
    masked update, and the masked update less the site's correction (sent with the unmasking)."""
    seen: list[tuple[str, np.ndarray[Any, Any]]] = []
    corrections: dict[str, list[np.ndarray[Any, Any]]] = {}
    honest = secure_rounds.secure_round

    def spy(**kw: Any) -> Any:
        call = kw["call"]

        def watching(site: str, doc: dict[str, Any], weights: Any) -> Any:
            fn = call(site, doc, weights)

            def run() -> Any:
                answer = fn()
                if doc["kind"] == "train":
                    seen.append((site, answer[1][0]))
                if doc["kind"] == "secagg_unmask":
                    corrections[site] = answer[1]
                return answer

            return run

        return honest(**{**kw, "call": watching})

    monkeypatch.setattr(secure_rounds, "secure_round", spy)
    secure = _train(three, rounds=1, secure_aggregation=True)
    assert len(seen) == 3 and sorted(corrections) == ["s0", "s1", "s2"]
    for site, masked in seen:
        assert [(c.dtype, c.shape) for c in corrections[site]] == [(np.uint64, masked.shape)]
        for view in (masked, masked - corrections[site][0]):
            assert view.dtype == np.uint64
            u = view.astype(np.float64) / 2.0**64
            assert 0.45 < u.mean() < 0.55  # uniform over the ring, not centred near grid zero
            histogram = np.bincount((view >> np.uint64(60)).astype(np.int64), minlength=16)
            assert histogram.min() > 0.3 * view.size / 16
    assert secure.history[0].sites == ["s0", "s1", "s2"]


def test_secure_aggregation_needs_two_sites(three: Any) -> None:
    with pytest.raises(PlanError, match="at least 2 sites"):
        _train(three, rounds=1, secure_aggregation=True, data=three.table("digits", sites=["s0"]))


def test_a_site_refuses_a_masking_step_out_of_order(three: Any) -> None:
    transport = three._transports["s0"]
    plans = site_plans(three.table("digits").node)
    config = RoundConfig(tuple(COLUMNS), "y", "logistic_regression", {}, 1, 0.5, 0.2, 0)
    request = config.request(
        "secagg_unmask", plans["s0"], 1, secagg={"session": "ab" * 16, "survivors": [0, 1]}
    )
    with pytest.raises(InvalidPlan, match="no masking session"):
        transport.exchange(request, [], timeout=10.0)


def _masking_request(kind: str, rnd: int = 1, **secagg: Any) -> Any:
    from dalang.federation.training import TrainRequest

    doc = {"kind": kind, "plan": "{}", "trainer": "logistic_regression", "config": {},
           "features": ["x"], "label": "y", "round": rnd, "secagg": secagg}  # fmt: skip
    return TrainRequest.from_json(doc)


def test_the_site_refuses_masking_steps_that_would_expose_its_update() -> None:
    import base64

    from dalang.federation.secure_training import MaskingSessions
    from dalang.learn.secagg import SecAggClient, SecAggParams

    sessions = MaskingSessions()
    start = {"threshold": 2, "clip": 1.0, "bits": 20, "modulus_bits": 64}
    with pytest.raises(InvalidPlan, match="threshold of at least 2"):
        sessions.advertise(
            _masking_request("secagg_keys", session="a" * 32, id=0, **{**start, "threshold": 1}),
            num_examples=5,
        )
    with pytest.raises(InvalidPlan, match="malformed"):
        sessions.advertise(
            _masking_request("secagg_keys", session="b" * 32, id=-1, **start), num_examples=5
        )
    keys = sessions.advertise(
        _masking_request("secagg_keys", session="c" * 32, id=0, **start), num_examples=5
    )
    with pytest.raises(InvalidPlan, match="already started"):
        sessions.advertise(
            _masking_request("secagg_keys", session="c" * 32, id=0, **start), num_examples=5
        )
    with pytest.raises(InvalidPlan, match="out of order"):
        sessions.unmask(
            _masking_request("secagg_unmask", session="c" * 32, survivors=[0, 1], dropped=[]),
            num_examples=5,
        )
    # a coordinator claiming four clients with a threshold of 2 could unmask it: refused
    others = [SecAggClient(i, SecAggParams(threshold=2, round=1)) for i in (1, 2, 3)]
    listed = {"0": keys["keys"]} | {
        str(c.client_id): base64.b64encode(c.advertise_keys()).decode() for c in others
    }
    with pytest.raises(InvalidPlan, match="not above half"):
        sessions.share(_masking_request("secagg_shares", session="c" * 32, keys=listed))


@pytest.mark.parametrize("bad", ["short", "two tensors", "float64"])
def test_a_site_whose_correction_is_malformed_has_its_masks_removed_from_shares(
    three: Any, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """The coordinator refuses the bad correction (and that site's shares) but keeps its
    masked update: the other two sites' shares remove its masks, and the sum is the plain one."""
    honest = secure_rounds.secure_round
    refused: dict[str, BaseException | None] = {}

    def spy(**kw: Any) -> Any:
        call = kw["call"]

        def spoiling(site: str, doc: dict[str, Any], weights: Any) -> Any:
            fn = call(site, doc, weights)
            if site != "s1" or doc["kind"] != "secagg_unmask":
                return fn

            def run() -> Any:
                answer, tensors = fn()
                (correction,) = tensors
                spoilt = {
                    "short": [correction[:-1]],
                    "two tensors": [correction, correction],
                    "float64": [correction.astype(np.float64)],
                }[bad]
                return answer, spoilt

            return run

        out = honest(**{**kw, "call": spoiling})
        refused.update(out.failures)
        return out

    plain = _train(three, rounds=1)
    monkeypatch.setattr(secure_rounds, "secure_round", spy)
    secure = _train(three, rounds=1, secure_aggregation=True)
    assert list(refused) == ["s1"]
    assert "correction" in str(refused["s1"])
    assert secure.history[0].sites == ["s0", "s1", "s2"]
    _assert_close(secure.model.weights, plain.model.weights)
