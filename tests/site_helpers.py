"""A small bank federation on real rows: scikit-learn's breast-cancer measurements written
as three sites' CSV files (one categorical column, a few missing cells), their site
configs, and a federation config that names no file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

SITES = ("bank_a", "bank_b", "bank_c")
COLUMNS = ["radius", "texture", "perimeter", "area", "smoothness"]


def write_sites(
    folder: Path,
    *,
    missing: bool = False,
    tls: str | None = None,
    rounds: int = 3,
    extra: str = "",
) -> Path:
    """Three sites' CSVs and site configs in ``folder`` and the federation config
    ``folder/federation.toml`` (returned). ``missing``: blank a few numeric cells."""
    d = load_breast_cancer()
    x, y = d.data[:, : len(COLUMNS)], d.target
    site = np.random.default_rng(0).choice(len(SITES), size=len(y), p=[0.5, 0.3, 0.2])
    for s, name in enumerate(SITES):
        with (folder / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*COLUMNS, "segment", "malignant"])
            for n, i in enumerate(np.flatnonzero(site == s)):
                cells = [f"{v:.5g}" for v in x[i]]
                if missing and n % 17 == 3:
                    cells[n % len(COLUMNS)] = ""
                segment = ("retail", "corporate", "private")[int(x[i, 0] * 7) % 3]
                w.writerow([*cells, segment, int(y[i] == 0)])
        tls_line = f'\n[tls]\ncerts = "{tls}"\n' if tls else "\n[tls]\ninsecure = true\n"
        (folder / f"{name}.toml").write_text(
            f'id = "{name}"\n\n[data]\npath = "{name}.csv"\n{tls_line}'
        )
    fed = folder / "federation.toml"
    fed.write_text(
        f"""name = "banks"
seed = 0

[data]
dataset = "table"
label = "malignant"
categorical = ["segment"]
missing = "{"impute" if missing else "error"}"
eval_fraction = 0.25

[model]
name = "mlp"
hidden = [16]

[client]
lr = 0.1
epochs = 2
batch_size = 16

[server]
rounds = {rounds}
clients_per_round = 3

[run]
dir = "{folder / "runs"}"

[federation]
sites = ["bank_a.toml", "bank_b.toml", "bank_c.toml"]
{extra}"""
    )
    return fed
