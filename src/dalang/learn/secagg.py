"""Secure aggregation (SecAgg+ style): the coordinator learns the sum of the updates, nothing else.

The protocol follows Bonawitz et al. (CCS 2017) with the sparse neighbour graph of SecAgg+
(Bell et al., CCS 2020). Every message is plain bytes or an unsigned-integer array, so the same
classes run in one process (:func:`simulate_secure_sum`) and over any wire.

Round by round, for a client ``u`` and the server:

1. ``advertise_keys``: ``u`` makes two X25519 key pairs for this round (one for the channel
   between clients, one for the pairwise masks) and sends both public keys.
2. ``share_keys``: ``u`` splits its mask private key and a fresh self-mask seed into Shamir
   shares (threshold ``t``), one per neighbour, each encrypted with AES-GCM under the key it
   agrees with that neighbour; the server only routes the ciphertexts.
3. ``masked_update``: ``u`` quantises its update into the ring Z/2^m and adds its self mask and,
   for every neighbour ``v`` that shared keys, ``+PRG(s_uv)`` if ``u < v`` else ``-PRG(s_uv)``.
   The pairwise masks cancel in the sum; the self mask keeps the update hidden even from a
   server that claims ``u`` dropped out.
4. ``unmask``: survivors send shares of the self-mask seed of each client whose masked update
   arrived, and of the mask private key of each client that dropped before sending it (never
   both for one client), and one correction vector: the part of their own masked update that
   will not cancel, ``c_u = PRG(b_u) + sum of sign(u, i) * PRG(s_ui)`` over the dropped
   neighbours ``i``. The server subtracts the corrections from the sum (no PRG, no key
   agreement at the server). For a survivor that sent no correction (it vanished after its
   masked update), the server rebuilds its seed and the dropped neighbours' keys from ``t``
   shares each and removes those masks itself, as in the original protocol.

Why a correction reveals nothing more: everything the server can compute from ``c_u`` it can
already compute from what the original protocol hands it in round 4 (the mask keys ``s_i`` of
the dropped clients and the self-mask seeds ``b_u`` of the survivors). ``y_u - c_u`` still
carries the pairwise masks with ``u``'s surviving neighbours, so one update stays hidden; and a
masked update of a client declared dropped that arrives late stays hidden by its self mask,
whose seed is never rebuilt (nor corrected) for a dropped client. As before, this protects
the updates from a curious server, not from one that lies about who dropped.

The PRG is AES-256 in counter mode (a stream of uniform bits at memory speed, with AES-NI).
"""

from __future__ import annotations

import functools
import math
import os
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dalang.errors import DalangError

__all__ = [
    "PRIME",
    "SecAggClient",
    "SecAggError",
    "SecAggParams",
    "SecAggServer",
    "Share",
    "TamperedMessage",
    "TooFewSurvivors",
    "combine_shares",
    "dequantize",
    "neighbours_of",
    "prg_expand",
    "quantize",
    "simulate_secure_sum",
    "split_secret",
]

PRIME = 2**521 - 1
"""The Mersenne prime of the field Shamir shares live in; any 32-byte secret fits below it."""

_SECRET_BYTES = 32
_FIELD_BYTES = (PRIME.bit_length() + 7) // 8  # 66
_SHARE_BYTES = 4 + _FIELD_BYTES
_KEYS_BYTES = 64  # two X25519 public keys
_NONCE_BYTES = 12
_PLAIN = struct.Struct(">II")  # sender, receiver ahead of the two shares

Token = Callable[[int], bytes]
"""Where randomness comes from: ``token(n)`` returns ``n`` uniform bytes."""


class SecAggError(DalangError):
    """Secure aggregation cannot go on (a protocol step out of order, a bad message)."""


class TooFewSurvivors(SecAggError, RuntimeError):
    """Fewer clients answered than the threshold: the masks cannot be removed, the sum is lost."""


class TamperedMessage(SecAggError, ValueError):
    """A ciphertext that fails authentication, or a message of the wrong size or addressee."""


# ---------------------------------------------------------------------------------------------
# Shamir secret sharing over GF(PRIME)


@dataclass(frozen=True, slots=True)
class Share:
    """One point ``(x, y)`` of a Shamir polynomial; ``x`` is the holder's id plus one."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(4, "big") + self.y.to_bytes(_FIELD_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != _SHARE_BYTES:
            raise TamperedMessage(f"a share is {_SHARE_BYTES} bytes, got {len(data)}")
        y = int.from_bytes(data[4:], "big")
        if y >= PRIME:
            raise TamperedMessage("a share outside the field")
        return cls(int.from_bytes(data[:4], "big"), y)


def split_secret(
    secret: bytes, *, threshold: int, holders: Sequence[int], token: Token = os.urandom
) -> dict[int, Share]:
    """Split ``secret`` so that any ``threshold`` of ``holders`` (ids >= 0) can rebuild it.

    Examples
    --------
    >>> shares = split_secret(b"k" * 32, threshold=2, holders=[0, 1, 2])
    >>> combine_shares([shares[0], shares[2]]) == b"k" * 32
    True
    """
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold must be in 1..{len(holders)}, got {threshold}")
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"a secret is {_SECRET_BYTES} bytes, got {len(secret)}")
    coefficients = [int.from_bytes(secret, "big")] + [
        int.from_bytes(token(_FIELD_BYTES), "big") % PRIME for _ in range(threshold - 1)
    ]
    shares: dict[int, Share] = {}
    for holder in holders:
        x = holder + 1
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[holder] = Share(x, y)
    return shares


@functools.lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # one set of coefficients serves every secret rebuilt from the same holders
    out = []
    for xi in xs:
        num, den = 1, 1
        for xj in xs:
            if xj != xi:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine_shares(shares: Collection[Share]) -> bytes:
    """Rebuild the secret from shares by Lagrange interpolation at zero.

    Any ``threshold`` shares give the secret; fewer give an unrelated value.
    """
    points = sorted((s.x, s.y) for s in shares)
    xs = tuple(x for x, _ in points)
    if len(set(xs)) != len(xs):
        raise ValueError("two shares with the same x")
    coefficients = _lagrange_at_zero(xs)
    secret = sum(c * y for c, (_, y) in zip(coefficients, points, strict=True)) % PRIME
    if secret >= 1 << (8 * _SECRET_BYTES):
        raise SecAggError("the shares do not rebuild a secret (too few, or not from one split)")
    return secret.to_bytes(_SECRET_BYTES, "big")


# ---------------------------------------------------------------------------------------------
# Fixed point


def quantize(
    x: np.ndarray[Any, Any],
    clip: float,
    bits: int,
    *,
    dtype: type[np.unsignedinteger[Any]] = np.uint64,
) -> np.ndarray[Any, Any]:
    """Map ``x`` clipped to ``[-clip, clip]`` onto the integers ``0 .. 2**bits - 2``.

    The grid has an odd number of points so that zero is one of them (``2**(bits-1) - 1``):
    a coordinate no site changes stays exactly zero in the sum, which adaptive server
    optimisers (FedAdam divides by the update's magnitude) need. A sum of ``n`` quantised
    vectors is exact in the ring Z/2^m while ``n * 2**bits <= 2**m``; :func:`dequantize` with
    ``n`` maps it back. Rounding is to nearest: each element is off by at most
    ``clip / (2**bits - 2)``.

    Examples
    --------
    >>> q = quantize(np.array([-1.0, 0.0, 1.0]), 1.0, 8)
    >>> q.tolist()
    [0, 127, 254]
    >>> dequantize(q, 1.0, 8).round(2).tolist()
    [-1.0, 0.0, 1.0]
    """
    if not 2 <= bits <= 62:
        raise ValueError(f"bits must be in 2..62, got {bits}")
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    scale = ((1 << bits) - 2) / (2.0 * clip)
    q = np.clip(np.asarray(x, dtype=np.float64), -clip, clip)
    q *= scale
    np.rint(q, out=q)
    q += float((1 << (bits - 1)) - 1)
    return q.astype(dtype)


def dequantize(
    q: np.ndarray[Any, Any], clip: float, bits: int, *, n: int = 1
) -> np.ndarray[Any, Any]:
    """Map a sum of ``n`` quantised vectors back to floats (float64).

    The ``n`` offsets come off in integers (mod 2^m, then read as signed), so the result is
    exact on the grid: a sum of zeros gives zeros.
    """
    a = np.asarray(q)
    if a.dtype.kind == "u":
        return _dequantize_centred(a - _ring_offset(a.dtype, bits, n), clip, bits)
    return _dequantize_centred(a.astype(np.float64) - n * _zero(bits), clip, bits)


def _zero(bits: int) -> int:
    """Where quantisation puts zero (the offset of one quantised vector)."""
    return (1 << (bits - 1)) - 1


def _ring_offset(dtype: np.dtype[Any], bits: int, n: int) -> np.unsignedinteger[Any]:
    """The offsets of ``n`` quantised vectors, as an element of the ring ``dtype`` holds."""
    return dtype.type((n * _zero(bits)) % (1 << (8 * dtype.itemsize)))  # type: ignore[no-any-return]


_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def _dequantize_centred(
    centred: np.ndarray[Any, Any], clip: float, bits: int
) -> np.ndarray[Any, Any]:
    """Floats from a sum whose offsets are already off (unsigned integers read as signed)."""
    if centred.dtype.kind == "u":
        centred = centred.view(_SIGNED[centred.dtype.itemsize])
    return np.multiply(centred, (2.0 * clip) / ((1 << bits) - 2), dtype=np.float64)  # one pass


# ---------------------------------------------------------------------------------------------
# Key derivation and the PRG


#: The plaintext of the PRG's keystream, shared and never written (1 MiB: cache-sized pieces).
_ZEROS = memoryview(bytes(1 << 20))


def _hkdf(secret: bytes, *, info: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=context, info=info).derive(secret)


def prg_expand(
    seed: bytes,
    size: int,
    dtype: type[np.unsignedinteger[Any]],
    *,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """``size`` uniform integers of ``dtype`` from a 32-byte seed (AES-256-CTR keystream).

    The keystream is the encryption of zeros, read from one shared block of zeros into
    ``out`` piece by piece: no pass to clear ``out`` first, and no in-place encryption
    (which costs OpenSSL an extra copy), so this runs at the cipher's own speed.
    """
    itemsize = np.dtype(dtype).itemsize
    if out is None:
        out = np.empty(size, dtype=dtype)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    view = memoryview(out.view(np.uint8).reshape(-1))  # type: ignore[arg-type]
    total = size * itemsize
    step = len(_ZEROS)
    n = 0
    for start in range(0, total, step):
        piece = min(step, total - start)
        n += encryptor.update_into(_ZEROS[:piece], view[start : start + piece])
    assert n == total
    return out


def _pair_sign(u: int, v: int) -> int:
    return 1 if u < v else -1


def neighbours_of(client: int, clients: Sequence[int], k: int | None) -> list[int]:
    """The SecAgg+ neighbours of ``client``: ``k`` nearest on the ring of sorted ids (all if None).

    The graph is symmetric: ``v in neighbours_of(u)`` exactly when ``u in neighbours_of(v)``.
    """
    ring = sorted(set(clients))
    n = len(ring)
    if k is None or k >= n - 1:
        return [c for c in ring if c != client]
    half = max(1, k // 2)
    at = ring.index(client)
    picked = {ring[(at + step) % n] for step in range(1, half + 1)}
    picked |= {ring[(at - step) % n] for step in range(1, half + 1)}
    picked.discard(client)
    return sorted(picked)


@dataclass(frozen=True, slots=True)
class SecAggParams:
    """What every party of one secure-aggregation round agrees on.

    ``threshold``: shares needed to rebuild a secret (the sum survives ``holders - threshold``
    dropouts per neighbourhood). ``clip``/``bits``: fixed-point range and precision.
    ``modulus_bits``: the ring Z/2^m the masks live in (32 or 64). ``neighbours``: the SecAgg+
    neighbourhood size, or None for the complete graph of SecAgg. ``round``: binds the keys and
    ciphertexts to one round so nothing can be replayed into another.
    """

    threshold: int
    clip: float = 8.0
    bits: int = 22
    modulus_bits: int = 32
    neighbours: int | None = None
    round: int = 0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {self.threshold}")
        if self.modulus_bits not in (32, 64):
            raise ValueError(f"modulus_bits must be 32 or 64, got {self.modulus_bits}")
        if self.bits >= self.modulus_bits:
            raise ValueError(f"bits ({self.bits}) must be below modulus_bits ({self.modulus_bits})")

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint32 if self.modulus_bits == 32 else np.uint64

    @property
    def max_clients(self) -> int:
        """How many quantised vectors the ring can sum without wrapping."""
        return (1 << self.modulus_bits) // ((1 << self.bits) - 1)

    @property
    def context(self) -> bytes:
        return b"dalang-secagg/v1/" + self.round.to_bytes(8, "big")

    @classmethod
    def for_clients(
        cls, n: int, *, threshold: int | None = None, bits: int = 22, **kw: Any
    ) -> SecAggParams:
        """Parameters for ``n`` clients: the 32-bit ring when it holds the sum, else 64-bit.

        ``threshold`` defaults to a majority of the share holders (a client and its neighbours).
        """
        k = kw.get("neighbours")
        holders = n if k is None else min(n, 2 * max(1, k // 2) + 1)
        t = holders // 2 + 1 if threshold is None else threshold
        m = 32 if bits + math.ceil(math.log2(n + 1)) <= 32 else 64
        return cls(threshold=t, bits=bits, modulus_bits=m, **kw)


def _check_id(client: int) -> None:
    if not 0 <= client < 2**32 - 1:
        raise ValueError(f"a client id is an int in 0..2**32-2, got {client}")


# ---------------------------------------------------------------------------------------------
# The client


@dataclass
class SecAggClient:
    """One site's side of a secure-aggregation round.

    Examples
    --------
    See :func:`simulate_secure_sum`, which drives clients and a server message by message.
    """

    client_id: int
    params: SecAggParams
    token: Token = os.urandom
    _channel_sk: X25519PrivateKey = field(init=False, repr=False)
    _mask_sk: X25519PrivateKey = field(init=False, repr=False)
    _self_seed: bytes = field(init=False, repr=False)
    _peers: dict[int, tuple[X25519PublicKey, X25519PublicKey]] = field(
        init=False, repr=False, default_factory=dict
    )
    _holders: list[int] = field(init=False, repr=False, default_factory=list)
    _held: dict[int, tuple[Share, Share]] = field(init=False, repr=False, default_factory=dict)
    _sent_masked: bool = field(init=False, default=False)
    _size: int = field(init=False, default=0)
    _answered: bool = field(init=False, default=False)
    _channel_keys: dict[int, bytes] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.client_id)
        self._channel_sk = X25519PrivateKey.from_private_bytes(self.token(32))
        self._mask_sk = X25519PrivateKey.from_private_bytes(self.token(32))
        self._self_seed = self.token(32)

    def advertise_keys(self) -> bytes:
        """Round 1: the two public keys, 64 bytes (channel key, then mask key)."""
        return (
            self._channel_sk.public_key().public_bytes_raw()
            + self._mask_sk.public_key().public_bytes_raw()
        )

    def share_keys(self, peers: Mapping[int, bytes]) -> dict[int, bytes]:
        """Round 2: given every client's advertised keys, encrypted shares for each neighbour.

        Returns ``{neighbour: ciphertext}``; the server routes each ciphertext to its neighbour.
        """
        if len(peers) < self.params.threshold:
            raise TooFewSurvivors(
                f"{len(peers)} clients advertised keys, "
                f"fewer than the threshold {self.params.threshold}"
            )
        if self.client_id not in peers:
            raise SecAggError("the key list does not include this client")
        for peer, keys in peers.items():
            _check_id(peer)
            if len(keys) != _KEYS_BYTES:
                raise TamperedMessage(
                    f"client {peer}'s keys are {len(keys)} bytes, expected {_KEYS_BYTES}"
                )
        if len({keys for keys in peers.values()}) != len(peers):
            raise TamperedMessage("two clients advertised the same keys")
        neighbours = neighbours_of(self.client_id, list(peers), self.params.neighbours)
        holders = [*neighbours, self.client_id]
        if len(holders) < self.params.threshold:
            raise ValueError(
                f"{len(holders)} share holders per client, "
                f"fewer than the threshold {self.params.threshold}"
            )
        for peer in neighbours:
            keys = peers[peer]
            self._peers[peer] = (
                X25519PublicKey.from_public_bytes(keys[:32]),
                X25519PublicKey.from_public_bytes(keys[32:]),
            )
        self._holders = holders
        mask_key = self._mask_sk.private_bytes_raw()
        key_shares = split_secret(
            mask_key, threshold=self.params.threshold, holders=holders, token=self.token
        )
        seed_shares = split_secret(
            self._self_seed, threshold=self.params.threshold, holders=holders, token=self.token
        )
        self._held[self.client_id] = (key_shares[self.client_id], seed_shares[self.client_id])
        out: dict[int, bytes] = {}
        for peer in neighbours:
            plain = (
                _PLAIN.pack(self.client_id, peer)
                + key_shares[peer].to_bytes()
                + seed_shares[peer].to_bytes()
            )
            nonce = self.token(_NONCE_BYTES)
            aad = self.params.context + _PLAIN.pack(self.client_id, peer)
            out[peer] = nonce + AESGCM(self._channel_key(peer)).encrypt(nonce, plain, aad)
        return out

    def receive_shares(self, ciphertexts: Mapping[int, bytes]) -> None:
        """Round 2, receiving end: decrypt and keep the shares each neighbour sent.

        Raises :class:`TamperedMessage` when a ciphertext fails authentication.
        """
        for sender, message in ciphertexts.items():
            if sender not in self._peers:
                raise TamperedMessage(f"shares from client {sender}, which is not a neighbour")
            aad = self.params.context + _PLAIN.pack(sender, self.client_id)
            try:
                plain = AESGCM(self._channel_key(sender)).decrypt(
                    message[:_NONCE_BYTES], message[_NONCE_BYTES:], aad
                )
            except InvalidTag:
                raise TamperedMessage(
                    f"the shares from client {sender} fail authentication"
                ) from None
            if len(plain) != _PLAIN.size + 2 * _SHARE_BYTES or _PLAIN.unpack_from(plain) != (
                sender,
                self.client_id,
            ):
                raise TamperedMessage(f"the shares from client {sender} are malformed")
            body = plain[_PLAIN.size :]
            self._held[sender] = (
                Share.from_bytes(body[:_SHARE_BYTES]),
                Share.from_bytes(body[_SHARE_BYTES:]),
            )

    def masked_update(self, vector: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Round 3: the quantised update plus the self mask and the pairwise masks, mod 2^m.

        Pairwise masks are added for the neighbours whose shares arrived (the others dropped
        before round 2 and are left out on both sides).
        """
        p = self.params
        flat = np.asarray(vector).reshape(-1)
        y = quantize(flat, p.clip, p.bits, dtype=p.dtype)
        scratch = np.empty_like(y)
        y += prg_expand(self._self_seed, y.size, p.dtype, out=scratch)
        for peer in sorted(self._held):
            if peer == self.client_id:
                continue
            mask = prg_expand(self._pair_seed(peer), y.size, p.dtype, out=scratch)
            if _pair_sign(self.client_id, peer) > 0:
                y += mask
            else:
                y -= mask
        self._sent_masked = True
        self._size = y.size
        return y

    def unmask(
        self, survivors: Collection[int], dropped: Collection[int]
    ) -> tuple[dict[int, bytes], np.ndarray[Any, Any]]:
        """Round 4: the shares of :meth:`unmask_shares` and this client's correction vector.

        The correction is the part of this client's masked update that will not cancel in the
        sum: its self mask plus its pairwise masks with the neighbours in ``dropped``
        (``+PRG(s)`` or ``-PRG(s)``, as they were added), mod 2^m. The server subtracts it
        instead of regenerating those masks. Answers once per round, like
        :meth:`unmask_shares`.
        """
        survivors, dropped = self._check_unmask(survivors, dropped)
        p = self.params
        correction = prg_expand(self._self_seed, self._size, p.dtype)
        scratch = np.empty_like(correction)
        for peer in sorted(self._held):
            if peer == self.client_id or peer not in dropped:
                continue
            mask = prg_expand(self._pair_seed(peer), self._size, p.dtype, out=scratch)
            if _pair_sign(self.client_id, peer) > 0:
                correction += mask
            else:
                correction -= mask
        return self._shares(survivors, dropped), correction

    def unmask_shares(
        self, survivors: Collection[int], dropped: Collection[int]
    ) -> dict[int, bytes]:
        """Round 4 without a correction: self-mask seed shares of survivors, mask key shares of
        dropped clients (the server then removes this client's masks itself, from shares).

        Refuses to give both for one client (that would unmask its update), refuses when fewer
        clients survived than the threshold or when this client is not among the survivors,
        and answers once per round (a second answer to other lists could unmask a client).
        """
        return self._shares(*self._check_unmask(survivors, dropped))

    def _check_unmask(
        self, survivors: Collection[int], dropped: Collection[int]
    ) -> tuple[set[int], set[int]]:
        survivors, dropped = set(survivors), set(dropped)
        if survivors & dropped:
            raise SecAggError(
                f"clients {sorted(survivors & dropped)} are listed as survivors and dropped"
            )
        if len(survivors) < self.params.threshold:
            raise TooFewSurvivors(
                f"{len(survivors)} masked updates arrived, "
                f"fewer than the threshold {self.params.threshold}"
            )
        if self.client_id in dropped:
            raise SecAggError("this client is alive but listed as dropped")
        if self.client_id not in survivors or not self._sent_masked:
            raise SecAggError(
                "this client sent no masked update this round, so it has nothing to unmask"
            )
        unlisted = sorted(set(self._held) - survivors - dropped)
        if unlisted:
            raise SecAggError(
                f"clients {unlisted} shared keys with this client but are listed neither as "
                "survivors nor as dropped"
            )
        if self._answered:
            raise SecAggError("this client has already answered the unmask round")
        self._answered = True
        return survivors, dropped

    def _shares(self, survivors: set[int], dropped: set[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for owner, (key_share, seed_share) in self._held.items():
            if owner in survivors:
                out[owner] = seed_share.to_bytes()
            elif owner in dropped:
                out[owner] = key_share.to_bytes()
        return out

    def _channel_key(self, peer: int) -> bytes:
        # used twice per peer (encrypt in round 2, decrypt its shares): agree once
        key = self._channel_keys.get(peer)
        if key is None:
            shared = self._channel_sk.exchange(self._peers[peer][0])
            key = self._channel_keys[peer] = _hkdf(
                shared, info=b"channel", context=self.params.context
            )
        return key

    def _pair_seed(self, peer: int) -> bytes:
        shared = self._mask_sk.exchange(self._peers[peer][1])
        return _hkdf(shared, info=b"mask", context=self.params.context)


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class SecAggServer:
    """The coordinator's side: routes messages, sums masked updates, removes the masks.

    It sees public keys, ciphertexts it cannot open, uniformly masked vectors, and at the end
    the survivors' corrections and the shares it needs for those that sent none, so it learns
    the sum and nothing else.
    """

    params: SecAggParams
    _keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    _routes: dict[int, dict[int, bytes]] = field(default_factory=dict, repr=False)
    _sum: np.ndarray[Any, Any] | None = field(default=None, repr=False)
    _masked_from: set[int] = field(default_factory=set)
    _unmask: dict[int, dict[int, bytes]] = field(default_factory=dict, repr=False)
    _corrected: set[int] = field(default_factory=set)
    _answers: list[dict[int, bytes]] | None = field(default=None, repr=False)

    def receive_keys(self, client: int, message: bytes) -> None:
        _check_id(client)
        if len(message) != _KEYS_BYTES:
            raise TamperedMessage(
                f"client {client}'s keys are {len(message)} bytes, expected {_KEYS_BYTES}"
            )
        self._keys[client] = bytes(message)

    def keys(self) -> dict[int, bytes]:
        """The advertised keys, broadcast to every client for round 2."""
        return dict(self._keys)

    def receive_shares(self, client: int, ciphertexts: Mapping[int, bytes]) -> None:
        if client not in self._keys:
            raise SecAggError(f"client {client} sent shares without advertising keys")
        self._routes[client] = dict(ciphertexts)

    def shares_for(self, client: int) -> dict[int, bytes]:
        """The ciphertexts addressed to ``client``, by sender."""
        return {u: route[client] for u, route in self._routes.items() if client in route}

    def receive_masked(self, client: int, masked: np.ndarray[Any, Any]) -> None:
        """Add one masked update into the running modular sum."""
        if client not in self._routes:
            raise SecAggError(f"client {client} sent a masked update without sharing its keys")
        if client in self._masked_from:
            raise SecAggError(f"client {client} sent two masked updates")
        if self._unmask:
            raise SecAggError(
                f"client {client}'s masked update arrived after the unmask round began"
            )
        y = np.asarray(masked)
        if y.dtype != self.params.dtype or y.ndim != 1:
            raise TamperedMessage(
                f"a masked update is a 1-d {np.dtype(self.params.dtype)} array, got {y.dtype}"
            )
        if self._sum is None:
            self._sum = y.copy()
        elif y.shape != self._sum.shape:
            raise TamperedMessage(
                f"client {client}'s update has {y.size} values, expected {self._sum.size}"
            )
        else:
            self._sum += y
        self._masked_from.add(client)
        if len(self._masked_from) > self.params.max_clients:
            raise SecAggError(
                f"the {self.params.modulus_bits}-bit ring cannot hold "
                f"more sums at {self.params.bits} bits"
            )

    def unmask_request(self) -> tuple[list[int], list[int]]:
        """Round 4's question to survivors: (clients whose update arrived, clients that dropped)."""
        survivors = sorted(self._masked_from)
        dropped = sorted(set(self._routes) - self._masked_from)
        if len(survivors) < self.params.threshold:
            raise TooFewSurvivors(
                f"{len(survivors)} masked updates arrived, "
                f"fewer than the threshold {self.params.threshold}"
            )
        return survivors, dropped

    def receive_unmask(
        self,
        client: int,
        shares: Mapping[int, bytes],
        correction: np.ndarray[Any, Any] | None = None,
    ) -> None:
        """Round 4's answer: the client's shares and, from :meth:`SecAggClient.unmask`, its
        correction (subtracted from the running sum at once).

        Without a correction the client's masks come off in :meth:`aggregate_quantized`, from
        the shares of the others. Raises :class:`TamperedMessage` for a correction that is not
        a 1-d array of the ring's dtype and of the sum's size.
        """
        if client not in self._masked_from:
            raise SecAggError(f"client {client} answered round 4 without a masked update")
        if client in self._unmask:
            raise SecAggError(f"client {client} answered round 4 twice")
        if client in self._corrected:
            raise SecAggError(
                f"client {client} answered round 4 after its masks came off from the others' shares"
            )
        assert self._sum is not None  # a masked update arrived
        if correction is not None:
            c = np.asarray(correction)
            want = np.dtype(self.params.dtype)
            if c.dtype != want or c.ndim != 1 or c.size != self._sum.size:
                raise TamperedMessage(
                    f"client {client}'s correction is a {c.ndim}-d {c.dtype} array of {c.size} "
                    f"values; expected a 1-d {want} array of {self._sum.size} values (the size "
                    "of the masked updates)"
                )
        if not self._unmask:  # who counts is settled now: the n offsets come off, once
            self._sum -= _ring_offset(self._sum.dtype, self.params.bits, len(self._masked_from))
        if correction is not None:
            self._sum -= c
            self._corrected.add(client)
        self._unmask[client] = dict(shares)
        self._answers = None

    def aggregate_quantized(self) -> np.ndarray[Any, Any]:
        """The sum of the survivors' quantised updates in Z/2^m (masks removed)."""
        total = self._unmasked()
        return total + _ring_offset(total.dtype, self.params.bits, len(self._masked_from))

    def aggregate(self) -> np.ndarray[Any, Any]:
        """The sum of the survivors' updates, dequantised (float64)."""
        return _dequantize_centred(self._unmasked(), self.params.clip, self.params.bits)

    def _unmasked(self) -> np.ndarray[Any, Any]:
        """The running sum with every mask and offset off (the sum itself: no copy).

        The corrections and the offsets came off as the answers arrived; what is left are the
        masks of the survivors that sent no correction: their self masks, and their pairwise
        masks with the dropped clients, regenerated from secrets rebuilt from the shares. They
        come off the running sum once (those survivors count as corrected from then on).
        """
        if self._sum is None:
            raise TooFewSurvivors("no masked update arrived")
        survivors, dropped = self.unmask_request()
        if not self._unmask:
            raise TooFewSurvivors("no client answered the unmask round")
        late = [j for j in survivors if j not in self._corrected]
        if not late:
            return self._sum
        # every secret first: too few shares raises before the sum changes
        seeds = [self._rebuild(owner) for owner in late]
        uncorrected = set(late)
        pairs: list[tuple[X25519PrivateKey, int, list[int]]] = []
        for owner in dropped:
            # v's mask includes owner when v received owner's shares
            masked_with = [
                v
                for v in sorted(self._routes[owner])
                if v in uncorrected and owner in self._routes.get(v, {})
            ]
            if masked_with:
                key = X25519PrivateKey.from_private_bytes(self._rebuild(owner))
                pairs.append((key, owner, masked_with))
        p = self.params
        total = self._sum
        scratch = np.empty_like(total)
        for seed in seeds:
            total -= prg_expand(seed, total.size, p.dtype, out=scratch)
        for mask_sk, owner, masked_with in pairs:
            for v in masked_with:
                shared = mask_sk.exchange(X25519PublicKey.from_public_bytes(self._keys[v][32:]))
                mask = prg_expand(
                    _hkdf(shared, info=b"mask", context=p.context), total.size, p.dtype, out=scratch
                )
                if _pair_sign(v, owner) > 0:
                    total -= mask
                else:
                    total += mask
        self._corrected |= uncorrected
        return total

    def _rebuild(self, owner: int) -> bytes:
        shares: list[Share] = []
        if self._answers is None:  # one order for every owner, holders by id
            self._answers = [a for _, a in sorted(self._unmask.items())]
        for answers in self._answers:
            if owner in answers:
                shares.append(Share.from_bytes(answers[owner]))
                if len(shares) == self.params.threshold:
                    break  # any threshold of them rebuild the secret: parse no more
        if len(shares) < self.params.threshold:
            raise TooFewSurvivors(
                f"{len(shares)} shares of client {owner}'s secret arrived, "
                f"fewer than the threshold {self.params.threshold}"
            )
        return combine_shares(shares[: self.params.threshold])


# ---------------------------------------------------------------------------------------------
# In-process run


def _seeded_token(seed: int) -> Token:
    rng = np.random.default_rng(seed)

    def token(n: int) -> bytes:
        return rng.bytes(n)

    return token


def simulate_secure_sum(
    updates: Sequence[np.ndarray[Any, Any]],
    *,
    threshold: int | None = None,
    drop: Collection[int] = (),
    late_drop: Collection[int] = (),
    seed: int | None = None,
    clip: float = 8.0,
    bits: int = 22,
    neighbours: int | None = None,
) -> np.ndarray[Any, Any]:
    """Run the whole protocol in one process; return the securely computed sum.

    ``drop``: clients (indices) that vanish after sharing their keys, before sending their masked
    update; their updates are left out and their pairwise masks removed. ``late_drop``: clients
    that send their masked update and then vanish before round 4; their updates count (the
    server removes their masks itself, from the shares; the others send corrections). The
    result is the sum over every client not in ``drop``, within quantisation error
    (``clip / (2**bits - 2)`` per client and element). ``seed`` makes the keys reproducible
    (tests and benchmarks only).

    Examples
    --------
    >>> xs = [np.full(3, float(i)) for i in range(5)]
    >>> simulate_secure_sum(xs, threshold=3, drop=[4]).round(3).tolist()
    [6.0, 6.0, 6.0]
    """
    n = len(updates)
    params = SecAggParams.for_clients(
        n, threshold=threshold, bits=bits, clip=clip, neighbours=neighbours
    )
    token: Token = os.urandom if seed is None else _seeded_token(seed)
    shape = np.asarray(updates[0]).shape
    clients = [SecAggClient(i, params, token) for i in range(n)]
    server = SecAggServer(params)
    for c in clients:
        server.receive_keys(c.client_id, c.advertise_keys())
    keys = server.keys()
    for c in clients:
        server.receive_shares(c.client_id, c.share_keys(keys))
    for c in clients:
        c.receive_shares(server.shares_for(c.client_id))
    gone = set(drop)
    for c, x in zip(clients, updates, strict=True):
        if c.client_id not in gone:
            server.receive_masked(c.client_id, c.masked_update(x))
    survivors, dropped = server.unmask_request()
    late = set(late_drop)
    for c in clients:
        if c.client_id not in gone and c.client_id not in late:
            server.receive_unmask(c.client_id, *c.unmask(survivors, dropped))
    return server.aggregate().reshape(shape)
