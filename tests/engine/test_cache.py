from __future__ import annotations

import numpy as np
import pytest
import torch

from optuna_biotune.biotune.objective import BioTuneObjective
from optuna_biotune.engine.blocks import stages
from optuna_biotune.engine.cache import ActivationCache, run_chain
from optuna_biotune.engine.models import build_model, preprocessing
from optuna_biotune.engine.sources import load_dataset
from optuna_biotune.errors import UsageError


@pytest.fixture(scope="module")
def lite0():
    model = build_model("efficientnet_lite0", 10, pretrained=True)
    pre = preprocessing("efficientnet_lite0")
    splits = load_dataset("digits", image_size=16, mean=pre.mean, std=pre.std)
    return model, stages(model), splits.train.subset(range(96))


def test_cached_features_equal_the_prefix_forward(lite0) -> None:
    model, chain, data = lite0
    cache = ActivationCache(max_bytes=2**30)
    feats = cache.features("train", data, chain, 3)
    x, _ = data.batch(slice(0, 5))
    with torch.no_grad():
        model.eval()
        for stage in chain[:3]:
            x = stage(x)
    torch.testing.assert_close(feats.x[:5], x, rtol=1e-4, atol=1e-5)
    assert torch.equal(feats.y, data.y)
    assert cache.features("train", data, chain, 3) is feats
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)


def test_deeper_cut_extends_a_shallower_one(lite0) -> None:
    _, chain, data = lite0
    cache = ActivationCache(max_bytes=2**30)
    cache.features("train", data, chain, 2)
    deep = cache.features("train", data, chain, 5)
    direct = run_chain(chain, data, start=0, stop=5)
    assert cache.stats.extended == 1 and cache.stats.misses == 1
    torch.testing.assert_close(deep.x, direct.x, rtol=1e-4, atol=1e-5)


def test_memory_bound_evicts_least_recently_used(lite0) -> None:
    _, chain, data = lite0
    one = run_chain(chain, data, start=0, stop=6)
    size = one.x.numel() * one.x.element_size()
    cache = ActivationCache(max_bytes=int(size * 2.5))
    for key in ("a", "b"):
        cache.features(key, data, chain, 6)
    cache.features("a", data, chain, 6)  # "a" is now the most recent
    cache.features("c", data, chain, 6)
    assert ("b", 6) not in cache and ("a", 6) in cache and ("c", 6) in cache
    assert cache.nbytes <= cache.max_bytes and cache.stats.evictions == 1


def test_too_large_activation_is_not_cached(lite0) -> None:
    _, chain, data = lite0
    cache = ActivationCache(max_bytes=1000)
    assert cache.features("train", data, chain, 1) is None
    assert len(cache) == 0 and cache.stats.skipped == 1


def test_cache_rejects_bad_arguments(lite0) -> None:
    _, chain, data = lite0
    with pytest.raises(UsageError, match="`max_bytes`"):
        ActivationCache(max_bytes=-1)
    with pytest.raises(UsageError, match="`cut`"):
        ActivationCache(max_bytes=10).features("k", data, chain, 0)


@pytest.fixture(scope="module")
def twins() -> tuple[BioTuneObjective, BioTuneObjective]:
    common = dict(seeds=[684], data_fraction=0.1, max_epochs=2, image_size=16, device="cpu")
    return BioTuneObjective(**common, use_cache=True), BioTuneObjective(**common, use_cache=False)


@pytest.mark.parametrize("frozen_blocks", [1, 4, 8])
def test_training_from_the_cache_gives_the_same_losses(twins, frozen_blocks: int) -> None:
    cached, plain = twins
    n = len(cached.blocks)
    mask = np.arange(n) >= frozen_blocks
    weights = np.where(mask, 1.0, 0.0)
    results = []
    for objective in (cached, plain):
        train, val = objective.tuner.fold("train", 1), objective.tuner.fold("val", 1)
        results.append(
            objective.tuner.train_config(
                mask, weights, seed=684, train=train, val=val, data_key=("fold", 1)
            )
        )
    assert ((("fold", 1), "train"), frozen_blocks) in cached.tuner.cache
    assert len(plain.tuner.cache) == 0
    a, b = ([h.train_loss for h in r.history] for r in results)
    np.testing.assert_allclose(a, b, rtol=1e-4)
    assert [h.val_metric for h in results[0].history] == [h.val_metric for h in results[1].history]
