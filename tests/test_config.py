import pytest

from fedforge import config as C
from fedforge.experiment import build


def _err(overrides, doc=None):
    with pytest.raises(C.ConfigError) as exc:
        C.validate(C.apply_overrides(doc or {}, overrides))
    return str(exc.value)


def test_defaults_validate_and_dump():
    cfg = C.load(None)
    assert cfg.data.dataset == "fashion_mnist" and cfg.model.name == "cnn"
    assert "dirichlet" in C.dump(cfg)


def test_unknown_key_names_the_key_and_what_is_allowed():
    msg = _err(["server.roundz=3"])
    assert "server.roundz: unknown key" in msg and "rounds" in msg
    msg = _err(["data.partition.alpah=0.1"])
    assert "data.partition.alpah" in msg and "alpha" in msg
    # a key that belongs to another variant is unknown for the chosen one
    msg = _err(["model.hidden=[3]"])
    assert "model.hidden: unknown key; allowed here: name" in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("client.lr=-0.1", "client.lr"),
        ("data.partition.alpha=0", "data.partition.alpha"),
        ("data.partition.alpha=-2", "data.partition.alpha"),
        ("server.rounds=0", "server.rounds"),
        ("client.batch_size=0", "client.batch_size"),
        ("server.optimizer.name=fedadam", None),
    ],
)
def test_bad_values_name_the_key(override, key):
    if key is None:
        assert C.validate(C.apply_overrides({}, [override])).server.optimizer.name == "fedadam"
        return
    assert key in _err([override])


def test_unknown_variant_lists_the_choices():
    msg = _err(["data.dataset=mnist"])
    assert "mnist" in msg and "fashion_mnist" in msg and "shakespeare" in msg


def test_overrides_parse_types_and_reject_malformed():
    cfg = C.validate(
        C.apply_overrides({}, ["server.rounds=7", "model.name=mlp", "model.hidden=[8, 4]"])
    )
    assert cfg.server.rounds == 7 and cfg.model.hidden == (8, 4)
    with pytest.raises(C.ConfigError, match="key=value"):
        C.apply_overrides({}, ["server.rounds"])


def test_toml_and_yaml_files(tmp_path):
    t = tmp_path / "a.toml"
    t.write_text('name = "x"\n[server]\nrounds = 2\n[data]\ndataset = "digits"\n')
    assert C.load(t).server.rounds == 2
    y = tmp_path / "a.yaml"
    y.write_text("server:\n  rounds: 4\n")
    assert C.load(y, ["seed=3"]).seed == 3
    bad = tmp_path / "b.toml"
    bad.write_text("[server\n")
    with pytest.raises(C.ConfigError, match="not valid TOML"):
        C.load(bad)
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load(tmp_path / "missing.toml")


def test_more_clients_per_round_than_exist_fails_at_build():
    cfg = C.validate(
        C.apply_overrides(
            {}, ["data.dataset=breast_cancer", "model.name=logistic", "server.clients_per_round=6"]
        )
    )
    with pytest.raises(ValueError, match="only 5 clients exist"):
        build(cfg)


def test_classifier_on_regression_data_is_refused():
    cfg = C.validate(
        C.apply_overrides(
            {}, ["data.dataset=synthetic_linear", "model.name=mlp", "server.clients_per_round=2"]
        )
    )
    with pytest.raises(C.ConfigError, match="regression"):
        build(cfg)


def test_backend_keys_must_fit_the_kind():
    assert "backend.clients_per_batch applies to kind vectorized" in _err(
        ["backend.kind=processes", "backend.clients_per_batch=8"]
    )
    assert "backend.address applies to kind ray" in _err(["backend.address=auto"])
    assert "backend.threads" in _err(["backend.threads=0"])
    assert "backend.kind" in _err(["backend.kind=gpu"])


def test_vectorized_backend_from_config_matches_sequential():
    """The same config on the vectorized and the sequential backend ends with the same model."""
    import torch

    from fedforge.backends.vectorized import Vectorized

    base = [
        "data.dataset=breast_cancer",
        "model.name=logistic",
        "server.clients_per_round=5",
        "server.rounds=2",
        "data.eval_fraction=0",
    ]
    finals = []
    for extra in (
        ["backend.threads=1"],
        ["backend.kind=vectorized", "backend.clients_per_batch=3"],
    ):
        sim = build(C.validate(C.apply_overrides({}, base + extra)))
        if "backend.kind=vectorized" in extra:
            assert isinstance(sim.backend, Vectorized) and sim.backend.clients_per_batch == 3
        sim.server.run(sim.clients, rounds=2, backend=sim.backend, progress=False)
        finals.append(sim.server.params)
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], atol=1e-5, rtol=0)


def test_lowrank_and_shared_randomk_from_config():
    from fedforge.transforms import LowRank, RandomK

    cfg = C.validate(
        C.apply_overrides(
            {
                "data": {"dataset": "breast_cancer"},
                "model": {"name": "logistic"},
                "server": {"clients_per_round": 5},
                "compression": {
                    "uplink": [
                        {"kind": "lowrank", "rank": 2, "unbiased": True},
                        {"kind": "quantize", "bits": 8},
                    ]
                },
            },
            [],
        )
    )
    stages = build(cfg).server.pipeline.transforms
    assert isinstance(stages[0], LowRank) and stages[0].rank == 2 and stages[0].unbiased
    bad = {"compression": {"uplink": [{"kind": "lowrank", "rank": 0}]}}
    assert "compression.uplink.0.lowrank.rank" in _err([], bad)
    shared = C.validate({"compression": {"uplink": [{"kind": "randomk", "shared": True}]}})
    from fedforge.experiment import build_pipeline

    (rk,) = build_pipeline(shared.compression.uplink, "compression.uplink").transforms
    assert isinstance(rk, RandomK) and rk.shared


def test_linear_aggregator_batch_from_config_and_its_bounds():
    from fedforge.aggregate import WeightedMean
    from fedforge.experiment import aggregator

    cfg = C.validate(
        C.apply_overrides({}, ["server.aggregator.name=weighted_mean", "server.aggregator.batch=8"])
    )
    agg = aggregator(cfg.server.aggregator)
    assert isinstance(agg, WeightedMean) and agg.batch == 8
    assert aggregator(C.validate({}).server.aggregator).batch == 1  # the default
    with pytest.raises(C.ConfigError, match="batch"):
        C.validate({"server": {"aggregator": {"name": "mean", "batch": 0}}})
    with pytest.raises(C.ConfigError, match="batch"):
        C.validate({"server": {"aggregator": {"name": "median", "batch": 4}}})  # not linear
