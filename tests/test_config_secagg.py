"""The ``[secagg]`` section: SecAgg+ around the server's aggregator from a config, in
simulation and over gRPC, and the combinations it must refuse with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from grpc_helpers import overrides, run_cli_federation

from fedforge import config as C
from fedforge.experiment import build
from fedforge.secagg import SecureAggregator
from fedforge.secagg.graph import Complete, Sparse

BASE = [
    "data.dataset=breast_cancer",
    "data.num_clients=10",
    "model.name=logistic",
    "server.clients_per_round=5",
    "server.rounds=3",
]
SECAGG = ["secagg.clip=10", "secagg.max_weight=1000"]  # updates and weights of this task


def _cfg(*extra: str) -> C.ExperimentConfig:
    return C.validate(C.apply_overrides({}, [*BASE, *extra]))


def test_secagg_section_masks_the_sum_and_trains_like_plain_aggregation() -> None:
    plain = build(_cfg())
    plain.server.run(plain.clients, 3, backend=plain.backend, progress=False)
    sim = build(_cfg(*SECAGG))
    agg = sim.server.aggregator
    assert isinstance(agg, SecureAggregator) and agg.inner.name == "weighted_mean"
    assert agg.config.fixed.clip == 10 and agg.config.seed == 0  # a simulation replays
    history = sim.server.run(sim.clients, 3, backend=sim.backend, progress=False)
    for k, v in plain.server.params.items():  # the unmasked sum, within fixed point
        torch.testing.assert_close(sim.server.params[k], v, rtol=0, atol=1e-6)
    for r in history:
        assert r["aggregated"] == 5 and r["secagg_bytes_up"] > 0
        assert r["secagg_threshold"] == 3 and r["secagg_neighbours"] == 4  # complete, 5


def test_graph_and_threshold_from_config() -> None:
    agg = build(_cfg(*SECAGG, "secagg.graph=complete", "secagg.threshold=4")).server.aggregator
    assert isinstance(agg, SecureAggregator)
    assert agg.config.graph == Complete() and agg.config.threshold == 4
    agg = build(_cfg(*SECAGG, "secagg.graph=sparse", "secagg.neighbours=2")).server.aggregator
    assert isinstance(agg, SecureAggregator) and agg.config.graph == Sparse(2)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["privacy.noise_multiplier=1", "privacy.clip=1"], "[privacy] cannot be combined"),
        (["server.update_norm_bound=5"], "server.update_norm_bound cannot be combined"),
        (["secagg.graph=complete", "secagg.neighbours=3"], "secagg.neighbours applies"),
        (["secagg.bits=16"], "secagg.bits"),
        (["secagg.noise_std=-1"], "secagg.noise_std"),
    ],
)
def test_config_refuses_what_secagg_cannot_carry(extra: list[str], says: str) -> None:
    with pytest.raises(C.ConfigError) as exc:
        _cfg(*SECAGG, *extra)
    assert says in str(exc.value)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["server.aggregator=median"], "secagg: "),
        (["server.clients_per_round=2"], "at least 3 participants"),
        (["secagg.threshold=1"], "secagg: "),
    ],
)
def test_build_refuses_a_server_secagg_cannot_run_in(extra: list[str], says: str) -> None:
    with pytest.raises(C.ConfigError) as exc:
        build(_cfg(*SECAGG, *extra))
    assert says in str(exc.value)


def test_build_refuses_a_compression_that_does_not_commute_with_the_sum() -> None:
    doc = {"compression": {"uplink": [{"kind": "topk", "fraction": 0.1}]}}
    cfg = C.validate(C.apply_overrides(doc, [*BASE, *SECAGG]))
    with pytest.raises(C.ConfigError, match="secagg: .*top"):
        build(cfg)


def test_server_command_runs_secagg_over_grpc_like_the_simulation(tmp_path: Path) -> None:
    """`fedforge server` with [secagg]: participants in two processes mask their updates;
    the server process ends bit-identical to the simulated SecAgg+ of the same config."""
    sets = overrides(tmp_path / "runs", *SECAGG, "secagg.stage_timeout=30")
    run = run_cli_federation(sets, tmp_path)
    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, sim.config.server.rounds, progress=False)
    for k, v in sim.server.params.items():
        assert torch.equal(run.params[k], v), k
    assert [r["aggregated"] for r in run.records] == [r["aggregated"] for r in history]
    assert all(r["secagg_bytes_up"] > 0 for r in run.records)
