"""``fedforge new NAME``: a project folder that runs as written, in simulation and deployed.

The project is a federation of two sites that bring their own CSV (``[data] dataset =
"table"``, ``fedforge.data.table``), made from real rows: the Wisconsin diagnostic breast
cancer set that scikit-learn ships (Street, Wolberg and Mangasarian 1993; 569 patients,
read offline with ``sklearn.datasets.load_breast_cancer``). A few of its measurements
keep plain names, ``size`` is a band of one measurement (a categorical column), and each
patient goes to one site by a seeded coin.

``add_parser(sub)`` adds the subcommand; ``write_project`` is its testable core.
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SITES", "ProjectFile", "add_parser", "site_rows", "write_project"]

SITES = ("site_a", "site_b")
_SHARE_A = 0.6  # each patient goes to site_a with this chance, else to site_b
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# (column in the CSV, feature of load_breast_cancer): the mean over a sample's nuclei
_NUMERIC = (
    ("radius", "mean radius"),
    ("texture", "mean texture"),
    ("smoothness", "mean smoothness"),
    ("compactness", "mean compactness"),
    ("concavity", "mean concavity"),
    ("symmetry", "mean symmetry"),
)
# ``size``: a band of the largest nucleus radius ("worst radius"), near its terciles
_SIZE_FROM = "worst radius"
_SIZE_BANDS = ((13.0, "small"), (17.0, "medium"), (float("inf"), "large"))
HEADER = [name for name, _ in _NUMERIC] + ["size", "diagnosis"]


@dataclass(frozen=True)
class ProjectFile:
    """One file of the project."""

    path: str  # relative to the project folder
    text: str
    what: str  # one line for the listing the command prints


def add_parser(sub: Any) -> None:
    """Add ``new`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "new",
        help="write a starter project: two sites with their own CSVs, ready to simulate or deploy",
        description=(
            "Write the folder NAME: a federation config (federation.toml), two site\n"
            "configs with a CSV each (sites/), and a README.md with the commands that\n"
            "simulate it and that deploy it over mutual TLS. The CSVs hold real rows\n"
            "(scikit-learn's breast cancer set). A folder that exists and is not empty\n"
            "is never overwritten."
        ),
        epilog="example:\n  fedforge new demo && cd demo && fedforge simulate federation.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "name", metavar="NAME", help="the project folder to create (letters, digits, _ . -)"
    )
    p.add_argument(
        "--dir",
        default=".",
        metavar="PARENT",
        help="create NAME inside PARENT (default: the current folder)",
    )
    p.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    folder = Path(args.dir) / args.name
    written = write_project(folder, args.name)
    print(f"wrote {folder}/")
    for f in written:
        print(f"  {f.path:<20} {f.what}")
    print(
        f"\nnext:\n  cd {folder}\n  fedforge simulate federation.toml\n"
        "and README.md gives the commands to deploy it (certificates, server, one client per "
        "site)."
    )
    return 0


def write_project(folder: Path, name: str, seed: int = 0) -> list[ProjectFile]:
    """Write the project into ``folder`` (created; refused if it holds anything) and return
    what was written, in order."""
    if not _NAME.match(name):
        raise ValueError(
            f"project name {name!r}: use letters, digits, '_', '.' and '-' (it names the "
            "folder and the runs); give the parent folder with --dir"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} already exists and is not empty; fedforge new never overwrites: "
            "choose another NAME or --dir"
        )
    rows = site_rows(seed)
    files = [
        ProjectFile(
            "federation.toml", _federation(name), "the federation: schema, model, training"
        ),
        *(
            ProjectFile(
                f"sites/{s}.toml", _site(s), f"site config of {s}: its id, data and certificates"
            )
            for s in SITES
        ),
        *(
            ProjectFile(f"sites/{s}.csv", _csv(rows[s]), f"{s}'s patients ({len(rows[s])} rows)")
            for s in SITES
        ),
        ProjectFile(
            "README.md", _readme(name, {s: len(r) for s, r in rows.items()}), "how to run it"
        ),
    ]
    (folder / "sites").mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.path).write_text(f.text, encoding="utf-8")
    return files


def site_rows(seed: int = 0) -> dict[str, list[list[str]]]:
    """The breast cancer rows as CSV cells under ``HEADER``, each patient at one site."""
    from sklearn.datasets import load_breast_cancer  # deferred: slow to import

    bunch = load_breast_cancer()
    names = list(bunch.feature_names)
    x, y = np.asarray(bunch.data), np.asarray(bunch.target)  # (569, 30), 0 malignant 1 benign
    cols = [names.index(src) for _, src in _NUMERIC]
    worst = x[:, names.index(_SIZE_FROM)]
    at_a = np.random.default_rng(seed).random(len(y)) < _SHARE_A  # (569,) bool
    out: dict[str, list[list[str]]] = {s: [] for s in SITES}
    for i in range(len(y)):
        band = next(label for upper, label in _SIZE_BANDS if worst[i] < upper)
        row = [f"{x[i, j]:g}" for j in cols] + [band, str(bunch.target_names[y[i]])]
        out[SITES[0] if at_a[i] else SITES[1]].append(row)
    return out


def _csv(rows: list[list[str]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(rows)
    return buf.getvalue()


# --- the files' text ------------------------------------------------------------------


def _federation(name: str) -> str:
    features = ", ".join(f'"{c}"' for c in HEADER[:-1])
    sites = ", ".join(f'"sites/{s}.toml"' for s in SITES)
    return f"""\
# The federation: what every site's rows mean, the model, and how it is trained.
# The server and `fedforge simulate` read this file; no site's data is named here
# (each site's config in sites/ says where its own file is).
#
#   fedforge simulate federation.toml                       # both sites on this machine
#   fedforge simulate federation.toml --set server.rounds=3 # any key, for one run
#
# Deploying it over the network: see README.md.

name = "{name}"
                        # names each run's folder: runs/{name}-<date>-<time>
seed = 0                # the model's start, each site's train/eval split, the sampling

[data]
dataset = "table"       # rows of named columns that each site brings (CSV, JSONL, Parquet)
label = "diagnosis"     # the column to predict
features = [{features}]
                        # the columns the model reads; [] = every column but the label
categorical = ["size"]  # features that hold categories: one-hot over all sites' values
missing = "error"       # an empty cell: "error" stops and names the line, "drop" skips
                        # the row, "impute" fills the federation's mean (or a category)
standardize = true      # scale numbers by the federation's mean and deviation, computed
                        # from the sites' sums (no row leaves a site)
task = "classification" # or "regression" for a numeric label
eval_fraction = 0.2     # share of each site's rows held out to evaluate the model

[model]
name = "mlp"            # a small fully connected network ("logistic" for a linear one)
hidden = [32]           # widths of its hidden layers

[client]                # the local training each site does every round
optimizer = "sgd"
lr = 0.1
epochs = 2              # passes over the site's training rows per round
batch_size = 16

[server]
rounds = 10
clients_per_round = 2   # sites that train in each round: here both

[run]
dir = "runs"            # where runs are written, relative to the folder you run in

[federation]
sites = [{sites}]
                        # site configs, relative to this file: `fedforge simulate` reads
                        # each site's file through them; `fedforge server` and
                        # `fedforge certs --config` read only their ids
# participants = ["site_a", "site_b"]
                        # or list the ids the server lets join, when the site configs
                        # live elsewhere (at the sites)
"""


def _site(site: str) -> str:
    return f"""\
# Site {site}: who it is, where its data is, how it connects.
# Only this site reads this file; the model and the training come from the server.
#
#   fedforge client --site sites/{site}.toml --server HOST:PORT

id = "{site}"          # this site's identity: its certificate is participants/{site}.pem

[data]
path = "{site}.csv"    # this site's rows, relative to this file (.csv, .jsonl, .parquet)

[tls]
certs = "../certs"     # from `fedforge certs certs --config federation.toml`; a real site
                       # needs only ca.pem and its own participants/{site}.pem and .key
# insecure = true      # instead of certs: plain text, for one trusted machine only

[resources]
threads = 1            # torch threads for local training
"""


def _readme(name: str, counts: dict[str, int]) -> str:
    shares = ", ".join(f"{s}: {n} rows" for s, n in counts.items())
    cols = "\n".join(f"| `{c}` | {src} |" for c, src in _NUMERIC)
    bands = ", ".join(
        f"{label} below {upper:g}" if upper != float("inf") else f"{label} otherwise"
        for upper, label in _SIZE_BANDS
    )
    return f"""\
# {name}

A federated learning project made by `fedforge new`: two sites, each with its own
CSV, train one model together without either sending its rows anywhere.

| file | what it is |
| --- | --- |
| `federation.toml` | the federation: what the rows mean (label, features, categories), the model, local training, rounds |
| `sites/site_a.toml`, `sites/site_b.toml` | each site's own config: its id, where its data is, its certificates |
| `sites/site_a.csv`, `sites/site_b.csv` | each site's rows ({shares}) |
| `certs/` | made by `fedforge certs` (below) |
| `runs/` | one folder per run: metrics.jsonl, metrics.csv, a plot, checkpoints |

## The data

Real patients: the Wisconsin diagnostic breast cancer set (569 fine-needle aspirates,
UCI; as shipped with scikit-learn, `sklearn.datasets.load_breast_cancer`). Each row is
one patient; `diagnosis` is `malignant` or `benign`. The numbers are the mean over the
cell nuclei in the sample's image:

| column | source feature |
| --- | --- |
{cols}
| `size` | `{_SIZE_FROM}` (largest nucleus) in bands: {bands} |

Each patient went to `site_a` with probability {_SHARE_A:g}, else to `site_b` (a seeded
coin, so `fedforge new` always writes the same files).

## Simulate (one machine, no network)

    fedforge simulate federation.toml

Each site's config is read, each site's CSV only by that site; the preprocessing
(means, deviations, categories) comes from the sites' sums. The run is written to
`runs/{name}-<date>-<time>/`; `fedforge show runs/<that folder>` prints its table.
Change any key for one run with `--set`, e.g. `--set server.rounds=3`.

## Deploy (a server and one process per site, mutual TLS)

Run these from this folder, each process in its own terminal:

    # 1. a CA, the server's certificate and one per site (ids from the site configs)
    fedforge certs certs --config federation.toml

    # 2. the server: waits for both sites, then trains; writes the port it listens on
    fedforge server federation.toml --certs certs --port-file port

    # 3. each site, on its own machine (here: the same one)
    fedforge client --site sites/site_a.toml --server localhost:$(cat port)
    fedforge client --site sites/site_b.toml --server localhost:$(cat port)

The server writes its run to `runs/`; every process exits 0 when training is done.

On separate machines: make the certificates with `--host <the server's name or IP>`
added, start the server with `--host 0.0.0.0 --port 50051`, and give each site its
`sites/<id>.toml`, its CSV, and `certs/ca.pem` with its own
`certs/participants/<id>.pem` and `.key` only (never `ca.key` nor another site's
key), in the same layout or with `[tls] certs` in its site config pointing at them.
Each site then runs `fedforge client --site sites/<id>.toml --server <server>:50051`.

## Use your own data

1. Replace each site's CSV with its own rows (a header row of column names, then one
   row per example), or point `[data] path` in its site config at its file (CSV,
   JSONL or Parquet). Every site's file needs the label and the feature columns.
2. In `federation.toml`, set `label` to the column to predict, `features` to the columns
   to learn from (`[]`: all the others) and `categorical` to those that hold categories;
   `task = "regression"` if the label is a number to predict.
3. To add a site: copy `sites/site_b.toml` with a new `id` and `path`, list it in
   `[federation] sites`, raise `[server] clients_per_round` if every site should train
   in every round, and give it a certificate from the same CA:
   `fedforge certs certs --ids <its id>`.
"""
