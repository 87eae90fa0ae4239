"""Split the BasicMotions smartwatch recordings (shipped inside aeon) across four watches.

The source is ``aeon/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts``:
80 recordings of 10 s at 10 Hz (100 time steps) from a smartwatch's 3-axis
accelerometer and 3-axis gyroscope (6 channels), labelled Standing, Walking,
Running or Badminton. Four students each recorded each activity five times,
but the files do not say which student made a recording, so the sites cannot
be the real wearers. The split rule stands in for them: with ``--seed``, each
activity's 20 recordings are shuffled and dealt out five per watch, so every
``watch_k`` has 20 recordings, five of each activity, as each student did.

The files are read straight from the installed package
(``importlib.util.find_spec``); nothing is downloaded and aeon itself is never
imported, so ``pip install --no-deps aeon`` is enough.

Each CSV row is one recording: columns ``c{channel}_t{time}`` (channel-major:
``c0_t0 .. c0_t99, c1_t0 ..``), so ``row.reshape(6, 100)`` gives
(channels, time) for a 1-D CNN or GRU; values are copied as written in the
source; ``label`` last is the activity name as the file spells it
(``aeon.datasets.load_basic_motions`` returns the same 80 recordings, value for
value and in the same order, but lowercases the names). ``pooled.csv`` holds
all 80 recordings (the TRAIN and TEST files together), for the centralized
baseline.

    python examples/iot/prepare.py --out examples/iot/data
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

SITES = 4
CHANNELS = 6
STEPS = 100


def source_dir() -> Path:
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("aeon is not installed: pip install --no-deps aeon==1.6.0")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "BasicMotions"


def read_ts(path: Path) -> list[tuple[list[str], str]]:
    """The recordings of one .ts file: (6 * 100 values channel-major, label) each."""
    out = []
    with path.open(encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    for line in lines[lines.index("@data") + 1 :]:
        if not line:
            continue
        *channels, label = line.split(":")
        values = [v for channel in channels for v in channel.split(",")]
        if len(channels) != CHANNELS or len(values) != CHANNELS * STEPS:
            raise ValueError(f"{path.name}: a recording is not {CHANNELS} x {STEPS}")
        out.append((values, label))
    return out


def prepare(out: Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write watch_0..watch_3.csv and pooled.csv into ``out``; return rows and labels per file."""
    series = [
        s for split in ("TRAIN", "TEST") for s in read_ts(source_dir() / f"BasicMotions_{split}.ts")
    ]
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(series):
        by_label[label].append(i)
    rng = np.random.default_rng(seed)
    sites: list[list[int]] = [[] for _ in range(SITES)]
    for label in sorted(by_label):
        for k, chunk in enumerate(np.array_split(rng.permutation(by_label[label]), SITES)):
            sites[k] += sorted(int(i) for i in chunk)
    files = {f"watch_{k}": sorted(idx) for k, idx in enumerate(sites)}
    files["pooled"] = list(range(len(series)))
    header = [f"c{c}_t{t}" for c in range(CHANNELS) for t in range(STEPS)] + ["label"]
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, idx in files.items():
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(series[i][0] + [series[i][1]] for i in idx)
        summary[name] = {"rows": len(idx), **Counter(series[i][1] for i in idx)}
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("examples/iot/data"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    args = p.parse_args(argv)
    summary = prepare(args.out, args.seed)
    print(f"source: {source_dir()}")
    for name, s in summary.items():
        mix = ", ".join(f"{k} {v}" for k, v in sorted(s.items()) if k != "rows")
        print(f"{args.out / name}.csv: {s['rows']} rows ({mix})")


if __name__ == "__main__":
    main()
