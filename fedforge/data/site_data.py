"""Data that sites bring: the federation states the schema, each site reads its own file.

A federation config's ``[data]`` section of a site kind (``table``, ``text``) names no file;
it says how every site's rows become examples. Its life, the same in simulation and over
gRPC:

1. each site reads its own file and reports ``local_stats`` (counts, sums, sums of
   squares, category and label counts over its training rows; no row leaves the site);
2. the server adds them up (``merge_stats``) and turns the totals into the federation's
   ``preprocessing`` (feature means and deviations, category vocabularies, the label
   set), a JSON document sent back to every site;
3. each site encodes its rows with it (``client_data``): the same feature layout
   everywhere, so one model fits all of them, and ``shape`` tells the server that layout
   to build the model before round 1.

Stats are flat ``{key: number}`` maps (the gRPC result's metrics map carries them); a key
is a JSON list such as ``["num", "income", "sum"]``, so column names may hold any
character.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from fedforge.components import Declaration
from fedforge.data.federated import ClientData
from fedforge.data.files import DataFileError, Table, read_table
from fedforge.seeding import derive_seed

__all__ = ["SiteData", "SiteDataError", "key", "merge_stats", "split_rows", "unkey"]

Stats = dict[str, float]


class SiteDataError(ValueError):
    """A site's data does not fit the federation's schema (the message says how)."""


def key(*parts: object) -> str:
    return json.dumps([str(p) for p in parts], ensure_ascii=False)


def unkey(k: str) -> list[str]:
    parts = json.loads(k)
    if not isinstance(parts, list):
        raise SiteDataError(f"malformed statistic key {k!r}")
    return [str(p) for p in parts]


def merge_stats(per_site: Mapping[str, Mapping[str, float]]) -> Stats:
    """The federation's totals: every key summed over the sites. A site whose numeric
    columns differ from the others' is refused here, by name."""
    total: Stats = {}
    columns: dict[str, frozenset[str]] = {}
    for site, stats in sorted(per_site.items()):  # one order wherever it runs
        columns[site] = frozenset(unkey(k)[1] for k in stats if unkey(k)[0] == "col")
        for k, v in stats.items():
            total[k] = total.get(k, 0.0) + float(v)
    if len(set(columns.values())) > 1:
        ref_site, ref = max(
            columns.items(), key=lambda kv: sum(c == kv[1] for c in columns.values())
        )
        for site, cols in sorted(columns.items()):
            if cols != ref:
                extra, lacking = sorted(cols - ref), sorted(ref - cols)
                raise SiteDataError(
                    f"site {site}'s features differ from site {ref_site}'s: "
                    + "; ".join(
                        s
                        for s in (
                            f"it has {extra} that the others lack" if extra else "",
                            f"it lacks {lacking}" if lacking else "",
                        )
                        if s
                    )
                    + " (list the federation's columns in data.features, or fix the site's file)"
                )
    return total


def split_rows(n: int, eval_fraction: float, seed: int, site: str) -> tuple[np.ndarray, np.ndarray]:
    """A site's seeded train / held-out split of its ``n`` rows (indices, sorted)."""
    if n == 0:
        raise SiteDataError(f"site {site} has no rows")
    perm = np.random.default_rng(derive_seed(seed, "split", site)).permutation(n)
    n_eval = round(eval_fraction * n)
    if eval_fraction > 0:
        n_eval = max(1, n_eval)
    if n - n_eval < 1:
        raise SiteDataError(
            f"site {site} has {n} row(s): after holding out data.eval_fraction = "
            f"{eval_fraction} none is left to train on; give the site more rows or lower "
            "data.eval_fraction"
        )
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


class SiteData(Declaration):
    """A ``[data]`` kind whose rows each site brings (see the module's doc)."""

    site_data: ClassVar[bool] = True

    def read(self, path: str, fmt: str | None = None) -> Table:
        try:
            return read_table(path, fmt)
        except DataFileError as exc:
            raise SiteDataError(str(exc)) from None

    def local_stats(self, table: Table, seed: int, site: str) -> Stats:
        raise NotImplementedError

    def preprocessing(self, stats: Stats) -> dict[str, Any]:
        raise NotImplementedError

    def client_data(
        self, table: Table, prep: Mapping[str, Any], seed: int, site: str
    ) -> ClientData:
        raise NotImplementedError

    def shape(self, prep: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
        """(input shape of one example, number of classes or None for regression)."""
        raise NotImplementedError

    def build(self, seed: int) -> Any:
        raise SiteDataError(
            f"data.dataset = {getattr(self, self.tag)!r} reads each site's own file: list the "
            "site configs in [federation] sites (simulation), or run `fedforge client --site` "
            "at each site (deployment)"
        )


def sorted_values(values: Iterable[str]) -> list[str]:
    """Numbers in numeric order, then the rest as text: labels 0, 1, 2, 10 stay in order."""

    def order(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    return sorted(set(values), key=order)
