"""Splitting a dataset's rows across virtual clients: IID and Dirichlet (label skew) partitions."""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def iid_partition(n_rows: int, clients: int, *, seed: int = 0) -> list[Array]:
    """Row indices for each of ``clients``: a random permutation cut into near-equal parts.

    Examples
    --------
    >>> [len(p) for p in iid_partition(10, 3, seed=0)]
    [4, 3, 3]
    """
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    order = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part) for part in np.array_split(order, clients)]


def dirichlet_partition(
    labels: Array, clients: int, *, alpha: float = 0.5, seed: int = 0
) -> list[Array]:
    """Row indices for each client, each class split by proportions drawn from Dirichlet(alpha).

    A small ``alpha`` gives each client few classes (strong label skew); a large one tends to
    IID. Some clients may get no rows when ``clients`` is large.

    Examples
    --------
    >>> import numpy as np
    >>> parts = dirichlet_partition(np.repeat([0, 1], 50), 4, alpha=0.5, seed=0)
    >>> sum(len(p) for p in parts)
    100
    """
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    pieces: list[list[Array]] = [[] for _ in range(clients)]
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
        for client, part in enumerate(np.split(rows, cuts)):
            if len(part):
                pieces[client].append(part)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in pieces]
