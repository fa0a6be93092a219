"""Secure aggregation: the sum survives dropouts, tampering is refused, masks hide updates."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dalang.errors import DalangError
from dalang.learn.secagg import (
    PRIME,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    TamperedMessage,
    TooFewSurvivors,
    combine_shares,
    dequantize,
    neighbours_of,
    quantize,
    simulate_secure_sum,
    split_secret,
)


def _updates(n: int, d: int = 257, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 1.0, size=d).astype(np.float32) for _ in range(n)]


def _tolerance(n: int, clip: float = 8.0, bits: int = 22) -> float:
    return n * clip / ((1 << bits) - 2) + 1e-9


# --- Shamir ------------------------------------------------------------------------------------


def test_any_threshold_shares_rebuild_the_secret() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, threshold=3, holders=[0, 1, 2, 3, 4])
    for picked in ([0, 1, 2], [2, 3, 4], [0, 4, 1], [0, 1, 2, 3, 4]):
        assert combine_shares([shares[i] for i in picked]) == secret


def test_fewer_shares_than_the_threshold_do_not_rebuild_it() -> None:
    secret = b"\xff" * 32
    shares = split_secret(secret, threshold=3, holders=[0, 1, 2, 3])
    with pytest.raises(DalangError):
        combine_shares([shares[0], shares[1]])


def test_share_bytes_round_trip_and_field() -> None:
    shares = split_secret(b"a" * 32, threshold=2, holders=[7, 9])
    s = shares[7]
    assert type(s).from_bytes(s.to_bytes()) == s
    assert s.x == 8 and 0 <= s.y < PRIME


# --- quantisation ------------------------------------------------------------------------------


def test_quantize_round_trip_within_one_step() -> None:
    x = np.linspace(-3, 3, 1001)
    q = quantize(x, 2.0, 16)
    assert q.dtype == np.uint64 and int(q.min()) == 0 and int(q.max()) == (1 << 16) - 2
    back = dequantize(q, 2.0, 16)
    assert np.abs(back - np.clip(x, -2, 2)).max() <= 2.0 / ((1 << 16) - 2)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_zero_is_on_the_grid_so_a_sum_of_zeros_is_exactly_zero(dtype: Any) -> None:
    zeros = [np.zeros(7) for _ in range(9)]
    total = sum(quantize(z, 3.0, 20, dtype=dtype) for z in zeros)
    assert total.dtype == dtype
    assert np.array_equal(dequantize(total, 3.0, 20, n=9), np.zeros(7))
    signs = dequantize(
        sum(quantize(np.array([-1.0, 1.0]), 1.0, 20) for _ in range(3)), 1.0, 20, n=3
    )
    assert signs.tolist() == [-3.0, 3.0]


def test_a_sum_of_quantised_vectors_dequantises_to_the_sum() -> None:
    xs = _updates(5)
    qs = sum(quantize(x, 8.0, 20) for x in xs)
    assert np.abs(
        dequantize(qs, 8.0, 20, n=5) - sum(x.astype(np.float64) for x in xs)
    ).max() < _tolerance(5, 8.0, 20)


# --- the protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 30])
@pytest.mark.parametrize("fraction", [0.0, "one", 0.3])
def test_the_secure_sum_equals_the_plain_sum_under_dropouts(n: int, fraction: float | str) -> None:
    xs = _updates(n, seed=n)
    k = 1 if fraction == "one" else math.floor(n * float(fraction))
    drop = list(range(1, 1 + k))
    got = simulate_secure_sum(xs, threshold=n // 2 + 1, drop=drop, seed=3)
    plain = sum(x.astype(np.float64) for i, x in enumerate(xs) if i not in drop)
    assert np.abs(got - plain).max() <= _tolerance(n)


@pytest.mark.parametrize("n", [10, 30])
def test_clients_that_drop_after_sending_still_count(n: int) -> None:
    xs = _updates(n, seed=1)
    late = list(range(math.floor(0.3 * n)))
    got = simulate_secure_sum(xs, threshold=n // 2 + 1, late_drop=late, seed=4)
    assert np.abs(got - sum(x.astype(np.float64) for x in xs)).max() <= _tolerance(n)


def test_early_and_late_dropouts_together_with_a_sparse_graph() -> None:
    xs = _updates(30, seed=2)
    got = simulate_secure_sum(xs, drop=[0, 5, 17], late_drop=[3, 22], neighbours=8, seed=5)
    plain = sum(x.astype(np.float64) for i, x in enumerate(xs) if i not in (0, 5, 17))
    assert np.abs(got - plain).max() <= _tolerance(27)


def test_the_shape_of_the_update_is_kept() -> None:
    xs = [np.ones((3, 4)) * i for i in range(4)]
    got = simulate_secure_sum(xs, threshold=3, seed=0)
    assert got.shape == (3, 4) and np.allclose(got, 6.0, atol=1e-4)


def test_fewer_survivors_than_the_threshold_is_a_clear_error() -> None:
    with pytest.raises(TooFewSurvivors, match="fewer than the threshold 6"):
        simulate_secure_sum(_updates(10), threshold=6, drop=[0, 1, 2, 3, 4], seed=0)


def test_too_few_answers_in_the_unmask_round_is_a_clear_error() -> None:
    with pytest.raises(TooFewSurvivors, match="shares of client"):
        simulate_secure_sum(_updates(10), threshold=6, late_drop=[0, 1, 2, 3, 4], seed=0)


def _round_to_shares(n: int = 4, threshold: int = 3) -> tuple[list[SecAggClient], SecAggServer]:
    params = SecAggParams(threshold=threshold)
    clients = [SecAggClient(i, params) for i in range(n)]
    server = SecAggServer(params)
    for c in clients:
        server.receive_keys(c.client_id, c.advertise_keys())
    for c in clients:
        server.receive_shares(c.client_id, c.share_keys(server.keys()))
    return clients, server


def test_a_tampered_ciphertext_is_refused() -> None:
    clients, server = _round_to_shares()
    inbox = server.shares_for(1)
    flipped = bytearray(inbox[0])
    flipped[20] ^= 1
    inbox[0] = bytes(flipped)
    with pytest.raises(TamperedMessage, match="client 0"):
        clients[1].receive_shares(inbox)


def test_a_ciphertext_redirected_to_another_client_is_refused() -> None:
    clients, server = _round_to_shares()
    meant_for_2 = server.shares_for(2)[0]
    with pytest.raises(TamperedMessage):
        clients[1].receive_shares({0: meant_for_2})


def test_a_client_refuses_to_unmask_one_client_both_ways() -> None:
    clients, server = _round_to_shares()
    for c in clients:
        c.receive_shares(server.shares_for(c.client_id))
    with pytest.raises(DalangError, match="survivors and dropped"):
        clients[0].unmask_shares([0, 1, 2], [2, 3])


def test_the_server_refuses_a_wrong_shape_or_dtype() -> None:
    clients, server = _round_to_shares()
    for c in clients:
        c.receive_shares(server.shares_for(c.client_id))
    server.receive_masked(0, clients[0].masked_update(np.zeros(10)))
    with pytest.raises(TamperedMessage):
        server.receive_masked(1, clients[1].masked_update(np.zeros(11)))
    with pytest.raises(TamperedMessage):
        server.receive_masked(2, np.zeros(10))


def test_neighbour_graph_is_symmetric() -> None:
    ids = list(range(0, 40, 3))
    for u in ids:
        for v in neighbours_of(u, ids, 4):
            assert u in neighbours_of(v, ids, 4)
    assert len(neighbours_of(0, ids, 4)) == 4
    assert neighbours_of(0, ids, None) == ids[1:]


# --- what a single message reveals -------------------------------------------------------------


def _masked_vectors(d: int = 20_000) -> tuple[np.ndarray, np.ndarray, SecAggParams]:
    params = SecAggParams(threshold=2)
    clients = [SecAggClient(i, params) for i in range(3)]
    server = SecAggServer(params)
    for c in clients:
        server.receive_keys(c.client_id, c.advertise_keys())
    for c in clients:
        server.receive_shares(c.client_id, c.share_keys(server.keys()))
    for c in clients:
        c.receive_shares(server.shares_for(c.client_id))
    plain = np.linspace(-1.0, 1.0, d)  # very structured: a ramp
    return plain, clients[0].masked_update(plain), params


def test_a_masked_update_is_uncorrelated_with_the_plain_one() -> None:
    plain, masked, _ = _masked_vectors()
    r = np.corrcoef(plain, masked.astype(np.float64))[0, 1]
    assert abs(r) < 4 / math.sqrt(plain.size)  # ~4 standard errors of a zero correlation


def test_the_servers_view_of_one_client_is_uniform() -> None:
    _, masked, params = _masked_vectors()
    u = masked.astype(np.float64) / 2.0**params.modulus_bits
    # Kolmogorov-Smirnov against U(0, 1): D * sqrt(n) < 1.95 at the 0.1% level
    s = np.sort(u)
    n = s.size
    grid = np.arange(1, n + 1) / n
    d = max(np.max(grid - s), np.max(s - (grid - 1 / n)))
    assert d * math.sqrt(n) < 1.95
    # and the 16 top-bit buckets are flat (chi-square, 15 dof, 0.1% level = 37.7)
    counts = np.bincount(
        (masked >> np.uint32(params.modulus_bits - 4)).astype(np.int64), minlength=16
    )
    expected = n / 16
    assert float(((counts - expected) ** 2 / expected).sum()) < 37.7


def test_the_same_update_masks_differently_each_round() -> None:
    _, a, _ = _masked_vectors(1000)
    _, b, _ = _masked_vectors(1000)
    assert np.mean(a == b) < 0.01


# --- one-shot unmasking: corrections from the survivors ----------------------------------------


def _round_to_masked(
    xs: list[np.ndarray], *, drop: tuple[int, ...] = (), threshold: int | None = None
) -> tuple[list[SecAggClient], SecAggServer, dict[int, np.ndarray]]:
    """Clients and a server through round 3; ``drop`` send no masked update."""
    n = len(xs)
    params = SecAggParams(threshold=n // 2 + 1 if threshold is None else threshold)
    clients, server = _round_to_shares(n, params.threshold)
    for c in clients:
        c.receive_shares(server.shares_for(c.client_id))
    masked = {}
    for c, x in zip(clients, xs, strict=True):
        if c.client_id not in drop:
            masked[c.client_id] = c.masked_update(x)
            server.receive_masked(c.client_id, masked[c.client_id])
    return clients, server, masked


@pytest.mark.parametrize("late", [(), (2,), (2, 6, 9)], ids=["none", "one", "three"])
def test_survivors_without_a_correction_take_the_fallback(late: tuple[int, ...]) -> None:
    xs = _updates(10, seed=7)
    drop = (0, 5)
    clients, server, _ = _round_to_masked(xs, drop=drop, threshold=5)
    survivors, dropped = server.unmask_request()
    assert dropped == list(drop)
    for c in clients:
        if c.client_id in survivors and c.client_id not in late:
            server.receive_unmask(c.client_id, *c.unmask(survivors, dropped))
    plain = sum(x.astype(np.float64) for i, x in enumerate(xs) if i not in drop)
    assert np.abs(server.aggregate() - plain).max() <= _tolerance(8)
    # a survivor that answers with its shares only is taken the same way
    clients, server, _ = _round_to_masked(xs, drop=drop, threshold=5)
    for c in clients:
        if c.client_id in survivors:
            if c.client_id in late:
                server.receive_unmask(c.client_id, c.unmask_shares(survivors, dropped))
            else:
                server.receive_unmask(c.client_id, *c.unmask(survivors, dropped))
    assert np.abs(server.aggregate() - plain).max() <= _tolerance(8)


def test_with_every_correction_the_server_regenerates_no_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dalang.learn import secagg

    xs = _updates(10, seed=8)
    clients, server, _ = _round_to_masked(xs, drop=(3,))
    survivors, dropped = server.unmask_request()
    for i in survivors:
        server.receive_unmask(i, *clients[i].unmask(survivors, dropped))
    expansions: list[int] = []
    honest = secagg.prg_expand

    def counting(*a: Any, **kw: Any) -> np.ndarray:
        expansions.append(1)
        return honest(*a, **kw)

    monkeypatch.setattr(secagg, "prg_expand", counting)
    plain = sum(x.astype(np.float64) for i, x in enumerate(xs) if i != 3)
    assert np.abs(server.aggregate() - plain).max() <= _tolerance(9)
    assert expansions == []


def test_a_correction_of_the_wrong_size_dtype_or_shape_is_refused_clearly() -> None:
    xs = _updates(4, d=50)
    clients, server, _ = _round_to_masked(xs, threshold=3)
    survivors, dropped = server.unmask_request()
    shares, correction = clients[0].unmask(survivors, dropped)
    assert correction.dtype == np.uint32 and correction.shape == (50,)
    with pytest.raises(TamperedMessage, match=r"1-d uint32 array of 50 values"):
        server.receive_unmask(0, shares, correction[:49])
    with pytest.raises(TamperedMessage, match=r"is a 1-d uint64 array"):
        server.receive_unmask(0, shares, correction.astype(np.uint64))
    with pytest.raises(TamperedMessage, match=r"is a 2-d uint32 array"):
        server.receive_unmask(0, shares, correction.reshape(5, 10))
    with pytest.raises(TamperedMessage, match=r"is a 1-d float64 array"):
        server.receive_unmask(0, shares, correction.astype(np.float64))
    server.receive_unmask(0, shares, correction)  # a refused answer left nothing behind
    for c in clients[1:]:
        server.receive_unmask(c.client_id, *c.unmask(survivors, dropped))
    plain = sum(x.astype(np.float64) for x in xs)
    assert np.abs(server.aggregate() - plain).max() <= _tolerance(4)


def test_a_client_answers_the_unmask_round_once() -> None:
    xs = _updates(5, d=30)
    clients, server, _ = _round_to_masked(xs, drop=(4,), threshold=3)
    survivors, dropped = server.unmask_request()
    clients[0].unmask(survivors, dropped)
    with pytest.raises(DalangError, match="already answered"):
        clients[0].unmask(survivors, dropped)
    # nor with other lists, nor shares alone: the key shares of 3 would unmask its update
    with pytest.raises(DalangError, match="already answered"):
        clients[0].unmask_shares([0, 1, 2, 4], [3])
    clients[1].unmask_shares(survivors, dropped)
    with pytest.raises(DalangError, match="already answered"):
        clients[1].unmask(survivors, dropped)


def test_the_server_takes_one_answer_per_client_and_no_update_after_them() -> None:
    xs = _updates(5, d=30)
    clients, server, _ = _round_to_masked(xs, drop=(4,), threshold=3)
    survivors, dropped = server.unmask_request()
    shares, correction = clients[0].unmask(survivors, dropped)
    server.receive_unmask(0, shares, correction)
    with pytest.raises(DalangError, match="answered round 4 twice"):
        server.receive_unmask(0, shares, correction)
    with pytest.raises(DalangError, match="after the unmask round began"):
        server.receive_masked(4, clients[4].masked_update(xs[4]))


def test_a_client_refuses_an_unmask_request_it_cannot_answer_honestly() -> None:
    xs = _updates(5, d=30)
    clients, _, _ = _round_to_masked(xs, drop=(4,), threshold=3)
    with pytest.raises(DalangError, match="listed as dropped"):
        clients[0].unmask([1, 2, 3], [0, 4])
    with pytest.raises(DalangError, match="survivors and dropped"):
        clients[0].unmask([0, 1, 2, 3], [3, 4])
    with pytest.raises(DalangError, match="neither as survivors nor as dropped"):
        clients[0].unmask([0, 1, 2, 3], [])
    with pytest.raises(DalangError, match="sent no masked update"):
        clients[4].unmask([0, 1, 2, 3, 4], [])
    # the refusals were not answers: the honest request still gets one
    shares, correction = clients[0].unmask([0, 1, 2, 3], [4])
    assert set(shares) == {0, 1, 2, 3, 4} and correction.size == 30


def test_a_masked_update_less_its_correction_still_hides_the_update() -> None:
    """The server holds y_j and c_j: their difference still carries j's pairwise masks with
    its surviving neighbours, so it is no closer to j's update than y_j was."""
    d = 20_000
    ramp = np.linspace(-1.0, 1.0, d)
    xs = [ramp, *_updates(4, d=d, seed=9)]
    clients, server, masked = _round_to_masked(xs, drop=(3,), threshold=3)
    survivors, dropped = server.unmask_request()
    params = clients[0].params
    for j in survivors:
        _, correction = clients[j].unmask(survivors, dropped)
        left = masked[j] - correction
        quantised = quantize(xs[j], params.clip, params.bits, dtype=params.dtype)
        assert np.mean(left == quantised) < 0.01
        u = left.astype(np.float64) / 2.0**params.modulus_bits
        assert 0.48 < u.mean() < 0.52  # uniform over the ring, not near the grid's centre
        r = np.corrcoef(xs[j], left.astype(np.float64))[0, 1]
        assert abs(r) < 4 / math.sqrt(d)


def test_with_no_surviving_neighbour_a_correction_reveals_what_the_shares_would() -> None:
    """The limit of the argument: a survivor whose every neighbour dropped is exposed by its
    correction exactly as the original protocol's shares expose it (b_j and each s_i)."""
    xs = _updates(3, d=40, seed=10)
    clients, _, masked = _round_to_masked(xs, drop=(1, 2), threshold=1)
    _, correction = clients[0].unmask([0], [1, 2])
    params = clients[0].params
    assert np.array_equal(
        masked[0] - correction, quantize(xs[0], params.clip, params.bits, dtype=params.dtype)
    )


def test_the_quantised_sum_is_exact_and_reading_it_twice_changes_nothing() -> None:
    xs = _updates(10, d=500, seed=11)
    clients, server, _ = _round_to_masked(xs, drop=(1, 8), threshold=5)
    survivors, dropped = server.unmask_request()
    late = {3, 4}
    for i in survivors:
        if i not in late:
            server.receive_unmask(i, *clients[i].unmask(survivors, dropped))
    params = clients[0].params
    want = np.zeros(500, dtype=np.uint32)
    for i in survivors:  # the ring's sum of the quantised updates, wrapping as it goes
        want += quantize(xs[i], params.clip, params.bits, dtype=np.uint32)
    first = server.aggregate_quantized()
    assert np.array_equal(first, want)
    assert np.array_equal(server.aggregate_quantized(), want)
    assert np.array_equal(server.aggregate(), server.aggregate())
    assert np.array_equal(server.aggregate(), dequantize(want, params.clip, params.bits, n=8))
    # the late clients' masks came off from the shares: an answer from one now is refused
    with pytest.raises(DalangError, match="after its masks came off"):
        server.receive_unmask(3, *clients[3].unmask(survivors, dropped))
