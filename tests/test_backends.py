import os

import pytest
import torch

import fedforge as ff
from tests.conftest import classifier_federation, make_server


def _final(backend, rounds=4):
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=4)
    history = server.run(clients, rounds, backend=backend, progress=False)
    return server.params, history


def test_processes_and_sequential_give_identical_parameters():
    # one torch thread on both sides: the same float operations in the same order
    seq, h1 = _final(ff.Sequential(threads=1))
    par, h2 = _final(ff.Processes(workers=2))
    for k in seq:
        assert torch.equal(seq[k], par[k]), k
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]


def test_default_threads_match_within_float_tolerance():
    seq, _ = _final(ff.Sequential())
    par, _ = _final(ff.Processes(workers=2))
    for k in seq:
        torch.testing.assert_close(seq[k], par[k], rtol=1e-5, atol=1e-6)


class _Dies:
    def fit(self, params, info):
        os._exit(3)  # a worker process vanishing mid-round

    def evaluate(self, params, info):
        raise NotImplementedError


def test_worker_crash_fails_one_client_and_the_pool_recovers():
    model, clients, central = classifier_federation()
    clients = {**clients, "zz_dies": _Dies()}
    server = make_server(model, central, per_round=len(clients))
    history = server.run(clients, 2, backend=ff.Processes(workers=2), progress=False)
    assert all("zz_dies" in r["failed"] for r in history)
    assert all(r["aggregated"] >= 4 for r in history)


def test_processes_rejects_zero_workers():
    with pytest.raises(ValueError):
        ff.Processes(workers=0)


def test_processes_removes_its_shared_memory_folder_even_without_close():
    import gc

    _, clients, _ = classifier_federation()
    closed = ff.Processes(workers=1)
    closed.start(clients)
    first = closed._tmp
    assert first is not None and first.is_dir()
    closed.start(clients)  # a restart replaces the folder instead of leaking the first
    assert not first.exists() and closed._tmp is not None and closed._tmp.is_dir()
    second = closed._tmp
    closed.close()
    assert not second.exists()
    dropped = ff.Processes(workers=1)
    dropped.start(clients)
    third = dropped._tmp
    assert third is not None and third.is_dir()
    dropped._pool.shutdown(wait=True)  # the pool holds no reference back to the backend
    del dropped
    gc.collect()
    assert not third.exists()
