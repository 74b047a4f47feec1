from __future__ import annotations

import numpy as np
import pytest

from optuna_biotune import decode, decode_params, gene_names, lr_weight


def test_lr_weight_spans_point_one_to_ten() -> None:
    assert lr_weight(0.0) == pytest.approx(0.1)
    assert lr_weight(0.5) == pytest.approx(1.0)
    assert lr_weight(1.0) == pytest.approx(10.0)


def test_decode_masks_strictly_above_threshold() -> None:
    mask, weights = decode([0.2, 0.5, 0.9], 0.5)
    assert mask.tolist() == [False, False, True]  # 0.5 is not > 0.5 (eq. 4)
    assert weights[:2].tolist() == [0.0, 0.0]
    assert weights[2] == pytest.approx(10 ** (2 * 0.4))


def test_decode_params_by_name() -> None:
    blocks = ["stem", "layer1", "head"]
    names = gene_names(blocks)
    assert names == ["importance:stem", "importance:layer1", "importance:head", "threshold"]
    params = dict(zip(names, [0.1, 0.7, 0.8, 0.6], strict=True))
    mask, weights = decode_params(params, blocks)
    assert mask.tolist() == [False, True, True]
    np.testing.assert_allclose(weights, [0.0, 10**0.4, 10**0.6])


@pytest.mark.parametrize("bad", [[], [[0.1]], [float("nan")]])
def test_decode_rejects_bad_genes(bad: list) -> None:
    with pytest.raises(ValueError):
        decode(bad, 0.5)
