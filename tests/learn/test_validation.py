"""validate_update refuses wrong shapes, dtypes, NaN/inf and outsize norms."""

from __future__ import annotations

import numpy as np
import pytest

from dalang.errors import FederationError, UpdateRejected
from dalang.learn.validation import update_norm, validate_update

REF = [np.zeros((2, 3)), np.zeros(3)]


def test_a_good_update_passes() -> None:
    validate_update([np.ones((2, 3)), np.ones(3)], REF, norm_bound=3.0)


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ([np.ones((3, 2)), np.ones(3)], "shape"),
        ([np.ones((2, 3))], "tensors"),
        ([np.ones((2, 3), dtype=np.float32), np.ones(3)], "dtype"),
        ([np.full((2, 3), np.nan), np.ones(3)], "NaN"),
        ([np.full((2, 3), np.inf), np.ones(3)], "NaN or infinite"),
        ([np.full((2, 3), 100.0), np.ones(3)], "norm"),
        ("weights", "list"),
    ],
)
def test_bad_updates_are_refused_with_a_reason(update: object, reason: str) -> None:
    with pytest.raises(UpdateRejected, match=reason) as info:
        validate_update(update, REF, norm_bound=10.0)
    assert reason in info.value.reason
    assert isinstance(info.value, FederationError) and isinstance(info.value, ValueError)


def test_update_norm() -> None:
    assert update_norm([np.array([3.0]), np.array([4.0])], [np.zeros(1), np.zeros(1)]) == 5.0
