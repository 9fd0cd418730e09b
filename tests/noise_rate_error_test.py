"""ropo.filter_ratio="auto" with no finite margins is a user error naming the key and the fix
(ropo_jax/ropo/noise_rate.py)."""

import numpy as np
import pytest

from ropo_jax.errors import UserError
from ropo_jax.ropo.noise_rate import estimate_flip_rate


def test_all_nan_margins_raise_a_user_error_naming_the_fix():
    with pytest.raises(UserError) as caught:
        estimate_flip_rate(np.full(8, np.nan))
    message = str(caught.value)
    assert "ropo.filter_ratio='auto'" in message and "got 0 of 8 (8 NaN or infinite)" in message
    assert "set ropo.filter_ratio to a number in [0, 1)" in message
    assert isinstance(caught.value, ValueError)  # callers that catch ValueError still do
