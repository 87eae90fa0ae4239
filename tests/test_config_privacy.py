"""The ``[privacy]`` section: DP-FedAvg and its accountant from a config file or the CLI,
with the same epsilon as the accounting library gives for the rounds that ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from grpc_helpers import overrides, run_cli_federation

from fedforge import config as C
from fedforge.cli import main
from fedforge.experiment import build
from fedforge.privacy import DPFedAvg, FixedSizeSampling, PrivacyAccountant, epsilon

BASE = [
    "data.dataset=breast_cancer",
    "data.num_clients=10",
    "model.name=logistic",
    "server.clients_per_round=4",
    "server.rounds=3",
]


def _cfg(*extra: str) -> C.ExperimentConfig:
    return C.validate(C.apply_overrides({}, [*BASE, *extra]))


SAMPLING = FixedSizeSampling(10, 4)  # what the server's sampler does: 4 of 10, fixed size


def _eps(z: float, rounds: int, delta: float = 1e-4) -> float:
    return epsilon([(SAMPLING.gaussian_round(z), rounds)], delta, relation=SAMPLING.relation)


def _err(*extra: str) -> str:
    with pytest.raises(C.ConfigError) as exc:
        build(_cfg(*extra))
    return str(exc.value)


def test_privacy_section_runs_dp_fedavg_and_reports_the_accountants_epsilon() -> None:
    sim = build(_cfg("privacy.noise_multiplier=1.1", "privacy.clip=0.5", "privacy.delta=1e-4"))
    dp = sim.server.aggregator
    assert isinstance(dp, DPFedAvg) and dp.clip == 0.5 and dp.noise_multiplier == 1.1
    assert dp.sampling == SAMPLING
    assert any(isinstance(p, PrivacyAccountant) for p in sim.server.plugins)
    history = sim.server.run(sim.clients, 3, backend=sim.backend, progress=False)
    want = [_eps(1.1, r) for r in (1, 2, 3)]
    assert [r["epsilon"] for r in history] == pytest.approx(want)
    assert want[0] < want[1] < want[2]


def test_budget_stops_the_run_before_it_is_exceeded() -> None:
    budget = (_eps(1.1, 2) + _eps(1.1, 3)) / 2
    sim = build(
        _cfg(
            "privacy.noise_multiplier=1.1",
            "privacy.clip=0.5",
            "privacy.delta=1e-4",
            f"privacy.budget={budget}",
        )
    )
    history = sim.server.run(sim.clients, 3, backend=sim.backend, progress=False)
    assert len(history) == 2 and history.last["epsilon"] <= budget
    assert "privacy budget: round 3 would raise epsilon" in (sim.server.stopped or "")


def test_adaptive_clip_from_config() -> None:
    sim = build(
        _cfg(
            "privacy.noise_multiplier=1.0",
            "privacy.adaptive_clip.initial=0.2",
            "privacy.adaptive_clip.target_quantile=0.6",
            "privacy.adaptive_clip.count_noise=1.0",
        )
    )
    dp = sim.server.aggregator
    assert isinstance(dp, DPFedAvg) and dp.adaptive is not None
    assert dp.adaptive.initial == 0.2 and dp.adaptive.target_quantile == 0.6
    history = sim.server.run(sim.clients, 2, backend=sim.backend, progress=False)
    assert all(r["epsilon"] > 0 for r in history)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["privacy.noise_multiplier=1.0"], "exactly one of privacy.clip"),
        (
            ["privacy.noise_multiplier=1.0", "privacy.clip=1.0", "privacy.adaptive_clip.initial=1"],
            "exactly one of privacy.clip",
        ),
        (["privacy.clip=1.0"], "privacy.noise_multiplier"),
        (["privacy.noise_multiplier=-1", "privacy.clip=1.0"], "privacy.noise_multiplier"),
        (["privacy.noise_multiplier=1", "privacy.clip=0"], "privacy.clip"),
        (["privacy.noise_multiplier=1", "privacy.clip=1", "privacy.delta=2"], "privacy.delta"),
        (["privacy.noise_multiplier=1", "privacy.clip=1", "privacy.epsilon=3"], "privacy.epsilon"),
    ],
)
def test_bad_privacy_sections_name_the_key(extra: list[str], says: str) -> None:
    with pytest.raises(C.ConfigError, match=says.replace(".", r"\.")):
        _cfg(*extra)


def test_privacy_refuses_another_aggregator_and_warns_of_a_delta_too_large() -> None:
    msg = _err("privacy.noise_multiplier=1", "privacy.clip=1", "server.aggregator=median")
    assert "server.aggregator" in msg and "[privacy]" in msg
    with pytest.warns(UserWarning, match=r"delta=0.5 is not below 1/10"):
        build(_cfg("privacy.noise_multiplier=1", "privacy.clip=1", "privacy.delta=0.5"))
    # the count noise defaults to participants / 20 = 0.2: too little for z = 1
    msg = _err("privacy.noise_multiplier=1.0", "privacy.adaptive_clip.initial=0.1")
    assert msg.startswith("privacy: ") and "count noise sigma_b=0.2 is too small" in msg


def test_simulate_command_writes_epsilon_to_the_run(tmp_path: Path) -> None:
    code = main(
        [
            "simulate",
            *[a for s in BASE for a in ("--set", s)],
            "--set",
            "privacy.noise_multiplier=1.1",
            "--set",
            "privacy.clip=0.5",
            "--set",
            f"run.dir={tmp_path}",
            "--no-progress",
        ]
    )
    assert code == 0
    (run,) = tmp_path.iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and 0 < rows[0]["epsilon"] < rows[1]["epsilon"] < rows[2]["epsilon"]
    assert "noise_multiplier: 1.1" in (run / "config.yaml").read_text()


def test_server_command_runs_dp_fedavg_over_grpc_like_the_simulation(tmp_path: Path) -> None:
    """`fedforge server` with a [privacy] section: participants in their own processes,
    the server clips and noises; the result is the simulation's, bit for bit, and so is
    the epsilon it records."""
    sets = overrides(tmp_path / "runs", "privacy.noise_multiplier=1.1", "privacy.clip=0.5")
    run = run_cli_federation(sets, tmp_path)
    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, sim.config.server.rounds, progress=False)
    for k, v in sim.server.params.items():
        assert torch.equal(run.params[k], v), k
    assert [r["epsilon"] for r in run.records] == [r["epsilon"] for r in history]
    assert run.records[0]["epsilon"] > 0
