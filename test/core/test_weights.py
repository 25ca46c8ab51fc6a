import numpy as np
import pytest

from resfit_ros.core.weights import PackedTensor, WeightsRejected, pack_weights, unpack_weights


def test_pack_unpack_round_trip_is_exact():
    rng = np.random.default_rng(0)
    w = {"actor.0.weight": rng.normal(size=(4, 3)).astype(np.float32), "normaliser.mean": np.arange(5.0)}
    back = unpack_weights(pack_weights(w))
    assert set(back) == set(w)
    for k in w:
        np.testing.assert_array_equal(back[k], np.asarray(w[k], np.float32))
        assert back[k].dtype == np.float32


def test_unpack_rejects_wrong_byte_count_and_duplicates():
    with pytest.raises(WeightsRejected, match="bytes for shape"):
        unpack_weights([PackedTensor("a", (2, 2), b"\0" * 12)])
    t = PackedTensor("a", (1,), b"\0" * 4)
    with pytest.raises(WeightsRejected, match="twice"):
        unpack_weights([t, t])
