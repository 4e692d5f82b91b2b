"""Each aggregation strategy against results computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedrelay.coordinator.aggregation import (
    AggregationError,
    ClientUpdate,
    NormClip,
    ParameterLayout,
    SecureAggregationUnsupported,
    ServerState,
    fedadam,
    fedavg,
    fedavgm,
    fedyogi,
    krum,
    krum_scores,
    median,
    multi_krum,
    trimmed_mean,
)


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def upd(client: str, values: list[float], n: int = 1) -> ClientUpdate:
    return ClientUpdate(client, vec(*values), n)


def test_fedavg_weights_by_examples() -> None:
    updates = [upd("a", [1, 2], 1), upd("b", [3, 4], 3)]
    result = fedavg().aggregate_fit(vec(10, 20), updates, ServerState())
    np.testing.assert_array_equal(result.delta, vec(2.5, 3.5))
    np.testing.assert_array_equal(result.params, vec(12.5, 23.5))
    assert result.state.rounds == 1


def test_fedavgm_accumulates_server_momentum() -> None:
    strategy = fedavgm(learning_rate=1.0, momentum=0.9)
    first = strategy.aggregate_fit(vec(0.0), [upd("a", [1.0])], ServerState())
    second = strategy.aggregate_fit(first.params, [upd("a", [1.0])], first.state)
    np.testing.assert_allclose(first.params, vec(1.0))
    np.testing.assert_allclose(second.params, vec(1.0 + 1.9), rtol=1e-7)


def test_fedadam_and_fedyogi_first_and_second_steps() -> None:
    # d = 0.5, beta1 = 0.9, beta2 = 0.99, lr = 0.1, tau = 1e-3.
    # Step 1 (both): m = 0.05, v = 0.0025, step = 0.1 * 0.05 / (0.05 + 0.001).
    # Step 2: m = 0.095; Adam v = 0.99 * 0.0025 + 0.0025 = 0.004975;
    #         Yogi v = 0.0025 - 0.0025 * sign(0.0025 - 0.25) = 0.005.
    d = [0.5]
    for strategy, v2 in ((fedadam(0.1), 0.004975), (fedyogi(0.1), 0.005)):
        one = strategy.aggregate_fit(vec(0.0), [upd("a", d)], ServerState())
        step1 = 0.1 * 0.05 / (0.05 + 1e-3)
        np.testing.assert_allclose(one.params, vec(step1), rtol=1e-6)
        two = strategy.aggregate_fit(one.params, [upd("a", d)], one.state)
        step2 = 0.1 * 0.095 / (np.sqrt(v2) + 1e-3)
        np.testing.assert_allclose(two.params, vec(step1 + step2), rtol=1e-6)
        np.testing.assert_allclose(two.state.slots["v"], [v2], rtol=1e-12)


def test_coordinate_median() -> None:
    odd = median().aggregate_fit(
        vec(0, 0), [upd("a", [1, -5]), upd("b", [10, 0]), upd("c", [3, 7])], ServerState()
    )
    np.testing.assert_array_equal(odd.delta, vec(3, 0))
    even = [upd("a", [1]), upd("b", [2]), upd("c", [3]), upd("d", [100])]
    np.testing.assert_array_equal(
        median().aggregate_fit(vec(0), even, ServerState()).delta, vec(2.5)
    )


def test_trimmed_mean_drops_extremes_per_coordinate() -> None:
    four = [upd("a", [1, 100]), upd("b", [2, 3]), upd("c", [3, 2]), upd("d", [100, 1])]
    result = trimmed_mean(0.25).aggregate_fit(vec(0, 0), four, ServerState())
    np.testing.assert_array_equal(result.delta, vec(2.5, 2.5))
    five = [upd(c, [v]) for c, v in zip("abcde", [-50, 1, 2, 3, 100], strict=True)]
    np.testing.assert_array_equal(
        trimmed_mean(0.2).aggregate_fit(vec(0), five, ServerState()).delta, vec(2)
    )


def test_krum_scores_and_selection() -> None:
    # 1-D points 0, 1, 2, 3, 100 with f = 1: each sums the n - f - 2 = 2 nearest squared distances.
    updates = [upd(c, [v]) for c, v in zip("abcde", [0, 1, 2, 3, 100], strict=True)]
    assert krum_scores(updates, 1) == [5.0, 2.0, 2.0, 5.0, 97.0**2 + 98.0**2]
    # Ties go to the lower client id: Krum picks "b" (1.0).
    np.testing.assert_array_equal(
        krum(1).aggregate_fit(vec(0), updates, ServerState()).delta, vec(1)
    )
    # Multi-Krum keeps b, c (score 2) and a (score 5, lower id than d): mean of 0, 1, 2.
    result = multi_krum(1, 3).aggregate_fit(vec(0), updates, ServerState())
    np.testing.assert_array_equal(result.delta, vec(1))


def test_krum_needs_enough_updates() -> None:
    with pytest.raises(AggregationError, match="needs at least 5 updates"):
        krum(1).aggregate_fit(vec(0), [upd(c, [0]) for c in "abcd"], ServerState())


def test_norm_clipping_scales_long_updates_only() -> None:
    strategy = fedavg(clip=NormClip(1.0))
    result = strategy.aggregate_fit(
        vec(0, 0), [upd("a", [3, 4]), upd("b", [0.3, 0.4])], ServerState()
    )
    np.testing.assert_allclose(result.delta, vec(0.45, 0.6), rtol=1e-6)


def test_aggregation_is_bitwise_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(7)
    updates = [
        ClientUpdate(
            f"c{i:02d}", rng.normal(size=1000).astype(np.float32), int(rng.integers(1, 100))
        )
        for i in range(30)
    ]
    params = rng.normal(size=1000).astype(np.float32)
    for strategy in (fedavg(), fedadam(), median(), trimmed_mean(0.1), multi_krum(3, 20)):
        once = strategy.aggregate_fit(params, updates, ServerState()).params.tobytes()
        shuffled = [updates[i] for i in rng.permutation(len(updates))]
        again = strategy.aggregate_fit(params, shuffled, ServerState()).params.tobytes()
        assert once == again, strategy.name


def test_robust_rules_refuse_secure_aggregation_and_means_accept_it() -> None:
    params = vec(1, 1)
    for strategy in (median(), trimmed_mean(), krum(1), multi_krum(1, 2)):
        assert not strategy.supports_secure_aggregation
        with pytest.raises(SecureAggregationUnsupported, match="needs every individual update"):
            strategy.aggregate_sum(params, vec(4, 4), 2, ServerState())
    result = fedavg(clip=NormClip(1.0)).aggregate_sum(params, vec(4, 8), 4, ServerState())
    np.testing.assert_array_equal(result.params, vec(2, 3))


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "no updates"),
        ([upd("a", [1, 2]), upd("a", [1, 2])], "more than one update"),
        ([upd("a", [1, 2, 3])], "has 3 parameters, the model has 2"),
    ],
)
def test_bad_updates_are_refused(updates: list[ClientUpdate], message: str) -> None:
    with pytest.raises(AggregationError, match=message):
        fedavg().aggregate_fit(vec(0, 0), updates, ServerState())


def test_update_validation() -> None:
    with pytest.raises(AggregationError, match="NaN or infinity"):
        upd("a", [float("nan")])
    with pytest.raises(AggregationError, match="num_examples=0"):
        upd("a", [1.0], 0)
    with pytest.raises(AggregationError, match="flat float32"):
        ClientUpdate("a", np.zeros(2, dtype=np.float64), 1)


def test_parameter_layout_round_trip() -> None:
    tensors = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([7, 8], dtype=np.float32),
    }
    layout = ParameterLayout.of(tensors)
    flat = layout.flatten(tensors)
    np.testing.assert_array_equal(flat, vec(7, 8, 0, 1, 2, 3, 4, 5))
    back = layout.unflatten(flat)
    assert sorted(back) == ["b", "w"]
    np.testing.assert_array_equal(back["w"], tensors["w"])
    with pytest.raises(AggregationError, match="do not match the layout"):
        layout.flatten({"w": tensors["w"]})


def test_coordinator_learning_code_does_not_import_torch() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, fedrelay.coordinator.aggregation, fedrelay.protocol.secagg, "
        "fedrelay.coordinator.scoring; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
