"""The Ray backend against Sequential: same parameters, failures isolated, job order kept.

One local Ray (2 CPUs) for the whole module: starting Ray costs seconds, so every test
shares it and each backend only creates (and kills) its own actors.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch

import fedforge as ff
from fedforge.backends.ray_backend import RayBackend, import_ray
from fedforge.client.types import ClientFailure, EvalResult, FitResult, RoundInfo
from tests.conftest import classifier_federation, make_server


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    # The clients below are defined in this test module, which Ray's workers cannot import:
    # ship their code by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 2**20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


class _Raises:
    def fit(self, params, info):
        raise ValueError("boom")

    def evaluate(self, params, info):
        raise ValueError("boom")


class _Dies:
    def fit(self, params, info):
        os._exit(3)  # the actor's worker process vanishes mid-round

    def evaluate(self, params, info):
        os._exit(3)


class _Sleeps:
    """Answers after ``delay`` seconds with an update that names it."""

    def __init__(self, delay: float, value: float) -> None:
        self.delay, self.value = delay, value

    def fit(self, params, info):
        time.sleep(self.delay)
        return FitResult({k: torch.full_like(v, self.value) for k, v in params.items()}, 1)

    def evaluate(self, params, info):
        time.sleep(self.delay)
        return EvalResult(self.value, 1)


def _run(backend, rounds=2):
    model, clients, central = classifier_federation()
    clients = {**clients, "zz_raises": _Raises()}
    server = make_server(model, central, per_round=5)
    history = server.run(clients, rounds, backend=backend, progress=False)
    return server.params, history


def test_ray_matches_sequential_and_a_raising_participant_fails_alone(ray_session):
    # One Ray pool for two checks (each pool costs seconds of actor start-up).
    # Parameters are bit-identical (torch.equal), not merely close: one torch thread on both
    # sides runs the same float operations, updates cross the object store losslessly, and
    # the server folds them in job order on both backends, so the sums happen in one order.
    seq, h1 = _run(ff.Sequential(threads=1))
    par, h2 = _run(RayBackend(threads_per_actor=1))
    for k in seq:
        assert torch.equal(seq[k], par[k]), k
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert [r["central_accuracy"] for r in h1] == [r["central_accuracy"] for r in h2]
    # The participant that raises is reported with Sequential's reason text and the round
    # goes on with the others (it is sampled in round 1 with this seed).
    assert [r.get("failed") for r in h1] == [r.get("failed") for r in h2]
    failed = [r for r in h2 if "failed" in r]
    assert failed, "the raising participant was never sampled"
    for r in failed:
        assert r["failed"] == {"zz_raises": "ValueError: boom"}
        assert r["aggregated"] == r["sampled"] - 1
    assert ray_session.is_initialized()  # close() left the caller's Ray running


def test_job_order_is_kept_and_a_dead_worker_fails_only_its_job(ray_session):
    # The first job is the slowest, so later ones finish first and must wait their turn;
    # the second kills its actor's process: only that job fails, a fresh actor takes over.
    clients = {
        "a": _Sleeps(0.4, 1.0),
        "b": _Sleeps(0.0, 2.0),
        "c": _Sleeps(0.0, 3.0),
        "dies": _Dies(),
    }
    backend = RayBackend(actors=2)
    backend.start(clients)
    try:
        params = {"w": torch.zeros(3)}
        jobs = [(cid, RoundInfo(1, 0)) for cid in ("a", "dies", "c", "b", "a")]
        got = list(backend.fit(jobs, params))
        assert [cid for cid, _ in got] == ["a", "dies", "c", "b", "a"]
        assert isinstance(got[1][1], ClientFailure)
        assert got[1][1].reason.startswith("worker died")
        values = [float(res.update["w"][0]) for i, (_, res) in enumerate(got) if i != 1]
        assert values == [1.0, 3.0, 2.0, 1.0]
        evals = [(cid, res.loss) for cid, res in backend.evaluate(jobs[2:], params)]
        assert evals == [("c", 3.0), ("b", 2.0), ("a", 1.0)]
    finally:
        backend.close()


def test_unserializable_clients_are_refused_with_the_reason(ray_session):
    class _HoldsLock(_Raises):
        lock = None

    client = _HoldsLock()
    client.lock = threading.Lock()  # cannot be pickled
    backend = RayBackend()
    with pytest.raises(TypeError, match="could not be serialized"):
        backend.start({"c": client})
    assert ray_session.is_initialized()  # the caller's session survives the failed start


def test_unstarted_backend_and_bad_arguments_are_refused():
    with pytest.raises(RuntimeError, match="not started"):
        list(RayBackend().fit([], {}))
    with pytest.raises(ValueError, match="num_cpus"):
        RayBackend(address="auto", num_cpus=2)
    with pytest.raises(ValueError, match="object_store_memory"):
        RayBackend(address="auto", object_store_memory=2**30)
    with pytest.raises(ValueError, match="actors"):
        RayBackend(actors=0)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` fail
    with pytest.raises(ImportError, match=r"fedforge\[ray\]"):
        import_ray()
    with pytest.raises(ImportError, match=r"fedforge\[ray\]"):
        RayBackend().start({})
