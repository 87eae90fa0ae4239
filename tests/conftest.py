"""Small federations shared by the server, backend and resume tests."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.client import central_evaluator
from fedforge.data import synthetic_linear
from fedforge.params import from_module

# Tests use tiny models, where torch's intra-op threads only add spinning (and stall badly
# on a loaded machine). One thread here and in every subprocess a test starts.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts on one torch thread, whatever the test before it set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def linear_federation(num_clients: int = 2, seed: int = 0, lr: float = 0.1):
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1)
    clients = {
        f"c{i}": ff.TorchClient(
            model,
            synthetic_linear(200, weight=3.0, noise=0.1, seed=seed + i),
            ff.regression(),
            optimizer=ff.sgd(lr),
            batch_size=16,
        )
        for i in range(num_clients)
    }
    test = synthetic_linear(100, weight=3.0, noise=0.0, seed=99)
    return model, clients, central_evaluator(model, test, ff.regression())


def classifier_federation(num_clients: int = 6, seed: int = 0):
    """A small MLP with dropout on a separable 3-class problem: exercises the global RNG."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3)
    )
    clients = {}
    for i in range(num_clients):
        x = torch.randn(60, 4, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        clients[f"c{i}"] = ff.TorchClient(
            model,
            TensorDataset(x[:48], y[:48]),
            ff.classification(),
            test=TensorDataset(x[48:], y[48:]),
            optimizer=ff.sgd(0.1),
            batch_size=8,
        )
    x = torch.randn(200, 4, generator=g)
    test = TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())
    return model, clients, central_evaluator(model, test, ff.classification())


def make_server(model, central, per_round=2, seed=0, **kw):
    return ff.Server(
        from_module(model),
        sampler=ff.Sampler(per_round=per_round, seed=seed),
        central_eval=central,
        seed=seed,
        **kw,
    )
