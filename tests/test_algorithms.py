"""SCAFFOLD and FedNova as round hooks of the one ``Server``: their math on numbers that can
be checked by hand, and whole runs interrupted and resumed bit for bit, on every backend
that runs participant stacks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.algorithms import FedNova, Plain, Scaffold
from fedforge.backends import Processes, Sequential
from fedforge.client.types import EvalResult, FitResult, RoundInfo
from fedforge.params import Params, from_module


class _Steps:
    """A participant whose update is ``value`` per coordinate after ``steps`` local steps."""

    def __init__(self, value: float, steps: int, n: int) -> None:
        self.value, self.steps, self.n = value, steps, n

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        upd = {k: torch.full_like(v, self.value) for k, v in params.items()}
        return FitResult(upd, self.n, {"local_steps": float(self.steps)})

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        raise NotImplementedError


def test_fednova_normalizes_by_local_steps():
    # a: 2 steps moved 1.0 (0.5 a step); b: 6 steps moved 6.0 (1.0 a step); equal weights.
    # FedAvg: mean 3.5. FedNova: tau_eff = (2 + 6) / 2 = 4, mean per-step = 0.75, step 3.0.
    params = {"w": torch.zeros(3)}
    clients = {"a": _Steps(1.0, 2, 10), "b": _Steps(6.0, 6, 10)}
    for alg, want in ((Plain(), 3.5), (FedNova(), 3.0)):
        server = ff.Server(params, sampler=ff.Sampler(per_round=2, seed=0), algorithm=alg)
        server.run(clients, 1, progress=False)
        assert torch.allclose(server.params["w"], torch.full((3,), want)), alg


def test_fednova_with_momentum_uses_the_papers_norm():
    rho, tau = 0.9, 5
    a = (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    assert FedNova(momentum=rho).norm(tau) == pytest.approx(a)
    assert FedNova().norm(tau) == tau
    with pytest.raises(ValueError, match="momentum"):
        FedNova(momentum=1.0)


def _linear(seed: int = 0) -> tuple[torch.nn.Module, dict[str, ff.TorchClient]]:
    """Four participants with different data sizes (unequal local step counts) and
    opposite targets: the heterogeneity SCAFFOLD and FedNova are for."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    g = torch.Generator().manual_seed(seed)
    clients = {}
    for i, n in enumerate((16, 40, 64, 100)):
        x = torch.randn(n, 3, generator=g)
        w = torch.tensor([[1.0, -2.0, 0.5]]) * (1 if i % 2 else -1)
        y = x @ w.T + 0.1 * torch.randn(n, 1, generator=g)
        clients[f"c{i}"] = ff.TorchClient(
            model, TensorDataset(x, y), ff.regression(), optimizer=ff.sgd(0.05), batch_size=8
        )
    return model, clients


def test_scaffold_one_round_by_hand():
    """Round 1 (c = c_i = 0): the update is plain local SGD's, and the new c_i is
    -update / (K * lr); the server's c moves by |S|/N times the mean dc."""
    model, clients = _linear()
    start = from_module(model)
    server = ff.Server(start, sampler=ff.Sampler(per_round=1, seed=0), algorithm=Scaffold(0.05))
    server.run({"c0": clients["c0"]}, 1, progress=False)  # one participant, sampled
    stack = server.participants["c0"]
    info = server._info("fit", 1, "c0")
    ref = clients["c0"].fit(start, info)
    k = ref.metrics["local_steps"]
    for name, upd in ref.update.items():
        ci = stack.state["@scaffold"][name]
        assert torch.allclose(ci, -upd / (k * 0.05), atol=1e-6)
        assert torch.allclose(server.params[name], start[name] + upd, atol=1e-6)
        assert torch.allclose(server.algo_state["scaffold/" + name], ci, atol=1e-6)  # |S|/N=1


def _run(alg, backend, rounds, run_dir=None, stop_after=None, resume=False):  # type: ignore[no-untyped-def]
    model, clients = _linear()
    server = ff.Server(
        from_module(model), sampler=ff.Sampler(per_round=2, seed=0), algorithm=alg, seed=5
    )
    if resume:
        assert server.resume_from(ff.RunDir(run_dir))
    server.run(
        clients, rounds, backend=backend, run_dir=run_dir, progress=False, stop_after=stop_after
    )
    return server


@pytest.mark.parametrize("alg", [Scaffold(0.05), FedNova()], ids=["scaffold", "fednova"])
@pytest.mark.parametrize("backend", ["sequential", "processes"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, alg, backend):
    def make():  # type: ignore[no-untyped-def]
        return Sequential() if backend == "sequential" else Processes(2)

    full = _run(alg, make(), 5)
    _run(alg, make(), 5, run_dir=tmp_path, stop_after=2)
    resumed = _run(alg, make(), 5, run_dir=tmp_path, resume=True)
    for k, v in full.params.items():
        assert torch.equal(resumed.params[k], v), k
    assert full.algo_state.keys() == resumed.algo_state.keys()
    for k, v in full.algo_state.items():
        assert torch.equal(resumed.algo_state[k], v), k
    want, got = full.participant_state(), resumed.participant_state()
    assert want.keys() == got.keys()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    if isinstance(alg, Scaffold):  # every participant sampled so far holds its own c_i
        assert any("@scaffold" in k for k in want)
    # and the algorithm changed the run: not FedAvg's model
    plain = _run(Plain(), make(), 5)
    assert not all(torch.equal(plain.params[k], v) for k, v in full.params.items())


def test_processes_backend_matches_sequential_for_scaffold():
    seq = _run(Scaffold(0.05), Sequential(), 3)
    par = _run(Scaffold(0.05), Processes(2), 3)
    for k, v in seq.params.items():
        assert torch.equal(par.params[k], v), k
    assert seq.participant_state().keys() == par.participant_state().keys()


def test_scaffold_refuses_a_client_without_corrected_steps():
    server = ff.Server(
        {"w": torch.zeros(3)}, sampler=ff.Sampler(per_round=1, seed=0), algorithm=Scaffold(0.1)
    )
    history = server.run({"a": _Steps(1.0, 2, 10)}, 1, progress=False)
    assert "fit_corrected" in history.last["failed"]["a"]


def test_the_algorithm_is_chosen_in_the_config():
    from fedforge import config as C
    from fedforge.experiment import build

    base = {
        "data": {"dataset": "breast_cancer", "num_clients": 4},
        "model": {"name": "logistic"},
        "client": {"lr": 0.1, "epochs": 2},
        "server": {"rounds": 2, "clients_per_round": 4, "algorithm": "scaffold"},
    }
    sim = build(C.validate(base))
    assert sim.server.algorithm == Scaffold(0.1)
    history = sim.server.run(sim.clients, 2, progress=False)
    assert history.last["aggregated"] == 4 and history.last["central_accuracy"] > 0.8
    assert any("@scaffold" in k for k in sim.server.participant_state())
    base["server"]["algorithm"] = "fednova"
    assert build(C.validate(base)).server.algorithm == FedNova(0.0)
    base["client"]["optimizer"] = "adam"
    with pytest.raises(C.ConfigError, match="needs client.optimizer = 'sgd'"):
        C.validate(base)
    base["client"] = {"momentum": 0.9}
    base["server"]["algorithm"] = "scaffold"
    with pytest.raises(C.ConfigError, match="client.momentum = 0"):
        C.validate(base)
