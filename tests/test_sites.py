"""Sites that bring their own data: the federation's preprocessing from the sites' sums,
simulation from a federation config and site configs, and each bad input refused before
training with what to do."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from grpc_helpers import cli_env
from site_helpers import COLUMNS, SITES, write_sites

from fedforge import config as C
from fedforge.config.site import load_site
from fedforge.data.files import read_table
from fedforge.data.site_data import SiteDataError, merge_stats, split_rows
from fedforge.data.table import TableData
from fedforge.experiment import build


def _schema(**kw: object) -> TableData:
    return TableData(label="malignant", categorical=["segment"], eval_fraction=0.25, **kw)


def test_preprocessing_from_site_sums_equals_the_pooled_rows(tmp_path: Path) -> None:
    write_sites(tmp_path, missing=True)
    schema = _schema(missing="impute")
    tables = {s: read_table(tmp_path / f"{s}.csv") for s in SITES}
    prep = schema.preprocessing(
        merge_stats({s: schema.local_stats(t, 7, s) for s, t in tables.items()})
    )
    # the pooled training rows, gathered here only to check the sums
    pooled: list[list[str]] = []
    for s, t in tables.items():
        train, _ = split_rows(len(t), 0.25, 7, s)
        pooled += [t.rows[i] for i in train]
    for k, col in enumerate(COLUMNS):
        j = tables["bank_a"].columns.index(col)
        vals = np.array([float(r[j]) for r in pooled if r[j] != ""])
        assert prep["numeric"][k] == col
        assert prep["mean"][k] == pytest.approx(vals.mean(), rel=1e-12)
        assert prep["std"][k] == pytest.approx(vals.std(), rel=1e-9)
    seg = tables["bank_a"].columns.index("segment")
    assert prep["categories"]["segment"] == sorted({r[seg] for r in pooled})
    assert prep["labels"] == ["0", "1"]
    assert prep["rows"] == len(pooled)


def test_a_site_simulation_trains_and_imputes(tmp_path: Path) -> None:
    fed = write_sites(tmp_path, missing=True)
    sim = build(C.load(fed))
    assert sorted(sim.clients) == list(SITES)
    assert sim.data.input_shape == (len(COLUMNS) + 3,)  # 5 numbers + 3 segments one-hot
    x = sim.data.clients["bank_a"].train.tensors[0]  # type: ignore[attr-defined]
    assert torch.isfinite(x).all()
    history = sim.server.run(sim.clients, 3, backend=sim.backend, progress=False)
    accs = [r["federated_accuracy"] for r in history if "federated_accuracy" in r]
    assert len(accs) == 3 and accs[-1] > 0.85, accs


def test_simulate_from_the_command_line_writes_the_preprocessing(tmp_path: Path) -> None:
    import subprocess
    import sys

    fed = write_sites(tmp_path, rounds=2)
    out = subprocess.run(
        [sys.executable, "-m", "fedforge.cli", "simulate", str(fed), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=cli_env(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = next((tmp_path / "runs").iterdir())
    prep = json.loads((run / "preprocessing.json").read_text())
    assert prep["numeric"] == COLUMNS and prep["labels"] == ["0", "1"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "federated_accuracy" in records[-1]


def test_site_config_paths_are_relative_to_the_site_config(tmp_path: Path) -> None:
    write_sites(tmp_path)
    site = load_site(tmp_path / "bank_b.toml")
    assert site.id == "bank_b" and Path(site.data.path) == (tmp_path / "bank_b.csv").resolve()
    assert site.tls.insecure


def _rewrite(path: Path, fn: object) -> None:
    rows = list(csv.reader(path.open()))
    rows = fn(rows)  # type: ignore[operator]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def _refused(fed: Path, *words: str, **overrides: str) -> None:
    sets = [f"{k}={v}" for k, v in overrides.items()]
    with pytest.raises((C.ConfigError, SiteDataError, ValueError)) as e:
        build(C.load(fed, sets))
    for w in words:
        assert w in str(e.value), str(e.value)
    assert not (fed.parent / "runs").exists()  # nothing half-written


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    (tmp_path / "bank_c.csv").unlink()
    _refused(fed, "bank_c.csv", "does not exist")


def test_a_wrong_feature_column_lists_the_files_columns(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    _refused(fed, "no column 'radious'", "'radius'", **{"data.features": "[radious, texture]"})


def test_an_absent_label_column_is_named(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    _refused(fed, "no column 'fraud'", **{"data.label": "fraud"})


def test_mixed_types_name_the_line_and_column(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)

    def spoil(rows: list[list[str]]) -> list[list[str]]:
        rows[5][1] = "high"
        return rows

    _rewrite(tmp_path / "bank_b.csv", spoil)
    _refused(fed, "bank_b.csv line 6", "column 'texture'", "'high' is not a number", "categorical")


def test_missing_cells_are_refused_unless_a_policy_says_otherwise(tmp_path: Path) -> None:
    fed = write_sites(tmp_path, missing=True)
    _refused(fed, "has no value", "data.missing", **{"data.missing": "error"})
    sim = build(C.load(fed, ["data.missing=drop"]))
    kept = sum(len(c.train) + len(c.test or []) for c in sim.data.clients.values())  # type: ignore[arg-type]
    total = sum(len(read_table(tmp_path / f"{s}.csv")) for s in SITES)
    assert 0 < total - kept < total // 10  # the rows with a blank cell, and only those


def test_a_category_spelled_like_a_missing_value_is_kept_when_the_schema_says_so(
    tmp_path: Path,
) -> None:
    fed = write_sites(tmp_path)
    seg = [*COLUMNS, "segment"].index("segment")
    for s in SITES:  # a real level "none", as German credit's other_debtors has
        _rewrite(
            tmp_path / f"{s}.csv",
            lambda rows: [
                [*r[:seg], "none" if r[seg] == "private" else r[seg], *r[seg + 1 :]] for r in rows
            ],
        )
    _refused(fed, "'none'", "data.missing_values", "leave it out")
    sim = build(C.load(fed, ['data.missing_values=[""]']))
    assert sim.preprocessing is not None
    assert sim.preprocessing["categories"]["segment"] == ["corporate", "none", "retail"]


def test_a_site_empty_after_its_split_is_refused(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    _rewrite(tmp_path / "bank_c.csv", lambda rows: rows[:2])  # the header and one row
    _refused(fed, "bank_c", "none is left to train on", "eval_fraction")


def test_a_site_whose_features_differ_is_named(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    _rewrite(
        tmp_path / "bank_b.csv",
        lambda rows: [[*r, "7" if i else "income"] for i, r in enumerate(rows)],
    )
    _refused(fed, "site bank_b", "['income']", "data.features")


def test_a_federation_config_that_names_data_paths_is_refused(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    _refused(fed, "data.path", "names no site's data", "site config", **{"data.path": "x.csv"})


def test_site_data_without_sites_and_sites_without_site_data(tmp_path: Path) -> None:
    with pytest.raises(C.ConfigError, match=r"\[federation\] sites"):
        C.validate({"data": {"dataset": "table", "label": "y"}})
    with pytest.raises(C.ConfigError, match="built-in dataset"):
        C.validate({"data": {"dataset": "digits"}, "federation": {"participants": ["a"]}})


def test_secure_aggregation_is_refused_until_the_preprocessing_is_secure() -> None:
    with pytest.raises(C.ConfigError, match="server would see every site's sums"):
        C.validate(
            {
                "data": {"dataset": "table", "label": "y"},
                "federation": {"sites": ["a"]},
                "secagg": {},
            }
        )


def test_two_site_configs_with_one_id_are_refused(tmp_path: Path) -> None:
    fed = write_sites(tmp_path)
    text = (tmp_path / "bank_c.toml").read_text().replace('"bank_c"', '"bank_a"')
    (tmp_path / "bank_c.toml").write_text(text)
    _refused(fed, "bank_a", "more than one site config")


def test_formats_read_the_same_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    write_sites(tmp_path)
    t = read_table(tmp_path / "bank_a.csv")
    with (tmp_path / "a.jsonl").open("w") as f:
        for r in t.rows:
            f.write(json.dumps(dict(zip(t.columns, r, strict=True))) + "\n")
    arrow = pa.table({c: [r[j] for r in t.rows] for j, c in enumerate(t.columns)})
    pq.write_table(arrow, tmp_path / "a.parquet")
    # the layout Dataset.save_to_disk writes: Arrow stream files listed in state.json
    hf = tmp_path / "a_hf"
    hf.mkdir()
    with (
        pa.OSFile(str(hf / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, arrow.schema) as w,
    ):
        w.write_table(arrow)
    (hf / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    (hf / "dataset_info.json").write_text("{}")
    for other in (tmp_path / "a.jsonl", tmp_path / "a.parquet", hf):
        o = read_table(other)
        assert o.columns == t.columns and o.rows == t.rows, other


def test_bad_files_are_named_by_line(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"x.csv line 3: 1 fields, the header has 2"):
        read_table(p)
    j = tmp_path / "x.jsonl"
    j.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"x.jsonl line 2: not JSON"):
        read_table(j)
    (tmp_path / "x.dat").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_table(tmp_path / "x.dat")


def test_a_model_factory_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bank_nets.py").write_text(
        "import torch\n"
        "def tiny(input_shape, num_classes, hidden=4):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], hidden), torch.nn.ReLU(),"
        " torch.nn.Linear(hidden, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fed = write_sites(tmp_path)
    sim = build(
        C.load(fed, ["model={name: import, factory: 'bank_nets:tiny', kwargs: {hidden: 3}}"])
    )
    shapes = {k: tuple(v.shape) for k, v in sim.model.state_dict().items()}
    assert shapes["0.weight"] == (3, len(COLUMNS) + 3) and shapes["2.weight"] == (2, 3)
    with pytest.raises(C.ConfigError, match="cannot import 'no_such_pkg.nets'"):
        build(C.load(fed, ["model={name: import, factory: 'no_such_pkg.nets:make'}"]))


def test_image_folders_per_site(tmp_path: Path) -> None:
    """scikit-learn's 8x8 digits written as PNG files in class folders at two sites."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < 3
    x, y = d.images[keep], d.target[keep]
    names = ["zero", "one", "two"]
    for n, (img, label) in enumerate(zip(x, y, strict=True)):
        site = "clinic_a" if n % 3 else "clinic_b"
        folder = tmp_path / site / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype("uint8")).save(folder / f"{n}.png")
    for site in ("clinic_a", "clinic_b"):
        (tmp_path / f"{site}.toml").write_text(f'id = "{site}"\n[data]\npath = "{site}"\n')
    fed = tmp_path / "federation.toml"
    fed.write_text(
        'name = "digits-images"\n[data]\ndataset = "images"\nsize = 8\n[model]\nname = "mlp"\n'
        "hidden = [32]\n[client]\nlr = 0.1\nepochs = 2\n[server]\nrounds = 4\n"
        f'[run]\ndir = "{tmp_path / "runs"}"\n'
        '[federation]\nsites = ["clinic_a.toml", "clinic_b.toml"]\n'
    )
    sim = build(C.load(fed))
    assert sim.data.input_shape == (1, 8, 8) and sim.data.num_classes == 3
    assert sim.preprocessing is not None and sim.preprocessing["labels"] == ["one", "two", "zero"]
    pooled = np.concatenate([c.train.tensors[0].numpy() for c in sim.data.clients.values()])  # type: ignore[attr-defined]
    assert abs(pooled.mean()) < 1e-5 and abs(pooled.std() - 1) < 1e-4  # normalized from sums
    history = sim.server.run(sim.clients, 4, backend=sim.backend, progress=False)
    assert list(history)[-1]["federated_accuracy"] > 0.9
    (tmp_path / "clinic_b" / "stray.png").write_bytes(b"")
    with pytest.raises(C.ConfigError, match="images directly in the folder"):
        build(C.load(fed))


def test_a_site_runs_only_the_model_factories_it_trusts(tmp_path: Path) -> None:
    """The server names a model factory and its arguments; a site builds it only when its
    own config lists it (else a hostile server could name any importable function)."""
    from fedforge.client.types import RoundInfo
    from fedforge.config.site import SiteConfig
    from fedforge.experiment import federation_doc
    from fedforge.site import Site

    fed = write_sites(tmp_path)
    cfg = C.load(fed, ["model={name: import, factory: 'shutil:rmtree', kwargs: {path: x}}"])
    sim_prep = {"numeric": COLUMNS, "mean": [0.0] * 5, "std": [1.0] * 5,
                "categories": {"segment": ["corporate", "private", "retail"]},
                "labels": ["0", "1"], "rows": 1}  # fmt: skip
    info = RoundInfo(1, 0, options={"federation": federation_doc(cfg, sim_prep)})
    site = Site(load_site(tmp_path / "bank_a.toml"))
    victim = tmp_path / "x"
    victim.mkdir()
    with pytest.raises(ValueError, match=r"model factory 'shutil:rmtree'.*\[trust\] factories"):
        site.fit({}, info)
    assert victim.is_dir()  # nothing ran
    trusting = SiteConfig.model_validate(
        {**site.config.model_dump(), "trust": {"factories": ["shutil:rmtree"]}}
    )
    assert trusting.trust.factories == ["shutil:rmtree"]
