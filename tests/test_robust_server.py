"""Robust aggregation wired into the server: norm-bound rejection, assumptions checked up front."""

import pytest

import fedforge as ff
from fedforge import config as C
from fedforge.aggregate import Krum, NormBound
from fedforge.attacks import MaliciousClient, Scale
from fedforge.experiment import aggregator
from tests.conftest import classifier_federation, make_server


def test_norm_bound_rejects_a_scaled_update_and_the_round_goes_on():
    model, clients, central = classifier_federation()
    clients["c0"] = MaliciousClient(clients["c0"], Scale(100.0))
    server = make_server(model, central, per_round=6, update_bound=NormBound(5.0))
    history = server.run(clients, 2, progress=False)
    for record in history:
        assert "exceeds the bound" in record["rejected"]["c0"]
        assert record["aggregated"] == 5


def test_krum_assumption_is_checked_before_training():
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=4, aggregator=Krum(f=1))
    with pytest.raises(ValueError, match="2f"):
        server.run(clients, 1, progress=False)


def test_aggregators_from_config_by_name_or_table():
    by_name = C.validate({"server": {"aggregator": "median"}}).server.aggregator
    assert aggregator(by_name).name == "median"
    table = C.validate({"server": {"aggregator": {"name": "trimmed_mean", "beta": 0.2}}})
    assert aggregator(table.server.aggregator).beta == 0.2
    with pytest.raises(C.ConfigError, match="server.aggregator.beta"):
        C.validate({"server": {"aggregator": {"name": "trimmed_mean", "beta": 0.5}}})
    with pytest.raises(C.ConfigError, match="server.aggregator.f"):
        C.validate({"server": {"aggregator": {"name": "krum", "f": -1}}})
    assert ff.Server  # the public entry point still imports
