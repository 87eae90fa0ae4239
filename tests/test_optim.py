import math

import pytest
import torch

from fedforge.optim import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi


def _x(v):
    return {"x": torch.tensor([v], dtype=torch.float64)}


def test_fedavg_adds_the_mean_update():
    opt = FedAvg().build()
    out = opt.step(_x(1.0), _x(0.5))
    assert out["x"].item() == pytest.approx(1.5)
    half = FedAvg(lr=0.5).build().step(_x(1.0), _x(0.5))
    assert half["x"].item() == pytest.approx(1.25)


def test_fedavgm_momentum_by_hand():
    opt = FedAvgM(lr=1.0, momentum=0.5).build()
    p = opt.step(_x(0.0), _x(1.0))  # buf = -1 -> x = 1
    p = opt.step(p, _x(1.0))  # buf = 0.5*-1 + -1 = -1.5 -> x = 2.5
    assert p["x"].item() == pytest.approx(2.5)


def test_fedadam_first_step_is_lr_times_sign():
    # Adam with bias correction: first step = lr * g / (|g| + tau) toward the update.
    opt = FedAdam(lr=0.1, tau=1e-3).build()
    p = opt.step(_x(0.0), _x(2.0))
    assert p["x"].item() == pytest.approx(0.1 * 2.0 / (2.0 + 1e-3), rel=1e-6)


def test_fedyogi_matches_the_formula():
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = FedYogi(lr=lr, beta1=b1, beta2=b2, tau=tau).build()
    x, m, v = 0.0, 0.0, tau**2
    p = _x(0.0)
    for delta in (1.0, -0.5, 2.0):
        g = -delta
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * g * g * math.copysign(1.0, v - g * g)
        x = x - lr * m / (math.sqrt(v) + tau)
        p = opt.step(p, _x(delta))
    assert p["x"].item() == pytest.approx(x, rel=1e-9)


def test_fedadagrad_matches_the_formula():
    lr, tau = 0.1, 1e-3
    opt = FedAdagrad(lr=lr, tau=tau).build()
    x, v = 0.0, tau**2
    p = _x(0.0)
    for delta in (1.0, 3.0):
        g = -delta
        v += g * g
        x -= lr * g / (math.sqrt(v) + tau)
        p = opt.step(p, _x(delta))
    assert p["x"].item() == pytest.approx(x, rel=1e-9)


def test_optimizer_state_round_trips():
    a = FedAdam().build()
    p = a.step(_x(0.0), _x(1.0))
    b = FedAdam().build()
    b.bind(p)
    b.load_state_dict(a.state_dict())
    assert a.step(p, _x(0.3))["x"].item() == b.step(p, _x(0.3))["x"].item()


@pytest.mark.parametrize(
    "bad",
    [
        lambda: FedAvg(lr=-1).build(),
        lambda: FedAvgM(momentum=1.0).build(),
        lambda: FedAdam(tau=0).build(),
        lambda: FedYogi(beta2=1.5).build(),
    ],
)
def test_bad_hyperparameters_raise(bad):
    with pytest.raises(ValueError):
        bad()
