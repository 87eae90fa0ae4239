"""``[data] dataset = "table"``: rows of features and a label that each site brings as CSV,
JSONL, Parquet or a saved Hugging Face dataset (``fedforge.data.files``).

The federation states the schema: the ``label`` column, the ``features`` (empty: every
other column), which of them are ``categorical`` (one-hot over the federation's
vocabulary), which cells count as missing (``missing_values``, compared case-insensitively:
by default the usual spellings of "no value" such as ``NA`` and ``none``; a federation
whose categories include a real level ``none`` lists fewer), how ``missing`` cells are
handled (``error``: refuse, naming the line; ``drop``: skip the row; ``impute``: the
federation's mean for a number, a ``<missing>`` category for a category; a missing label
always drops the row unless ``error``), and whether numbers are ``standardize``d with the federation's mean and deviation. All of
that is computed from the sites' sums (``fedforge.data.site_data``), never from pooled
rows, and equals what the pooled rows would give.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import TensorDataset

from fedforge.components import register
from fedforge.data.federated import ClientData
from fedforge.data.files import Table
from fedforge.data.site_data import (
    SiteData,
    SiteDataError,
    Stats,
    key,
    sorted_values,
    split_rows,
    unkey,
)

__all__ = ["MISSING", "TableData", "TextData"]

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
_MISSING_CATEGORY = "<missing>"


def _is_missing(cell: Any, spellings: frozenset[str] = MISSING) -> bool:
    """A JSON null, a NaN, or a text among ``spellings`` (lowercase, after stripping)."""
    if cell is None:
        return True
    if isinstance(cell, float) and math.isnan(cell):
        return True
    return isinstance(cell, str) and cell.strip().lower() in spellings


def _text(cell: Any) -> str:
    if isinstance(cell, bool):
        return str(cell).lower()
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


@register("dataset", "table")
class TableData(SiteData):
    """Tabular rows each site brings; the schema is the federation's (see the module)."""

    dataset: Literal["table"] = "table"
    label: str
    features: list[str] = []
    categorical: list[str] = []
    missing: Literal["error", "drop", "impute"] = "error"
    missing_values: list[str] = sorted(MISSING)
    standardize: bool = True
    task: Literal["classification", "regression"] = "classification"
    eval_fraction: float = Field(0.2, ge=0, lt=1)

    @field_validator("missing_values")
    @classmethod
    def _spelled(cls, v: list[str]) -> list[str]:
        return sorted({s.strip().lower() for s in v})

    @cached_property
    def _spellings(self) -> frozenset[str]:
        return frozenset(self.missing_values)

    def _missing(self, cell: Any) -> bool:
        return _is_missing(cell, self._spellings)

    # --- the columns ----------------------------------------------------------------

    def _columns(self, table: Table) -> tuple[list[str], list[str]]:
        """(numeric, categorical) feature columns of ``table``, checked against the schema."""
        table.index(self.label)  # a missing label column is named with the file's columns
        if self.label in self.features or self.label in self.categorical:
            raise SiteDataError(f"data.label {self.label!r} is also listed as a feature")
        features = self.features or [c for c in table.columns if c != self.label]
        for c in [*features, *self.categorical]:
            table.index(c)
        stray = [c for c in self.categorical if c not in features]
        if stray:
            raise SiteDataError(f"data.categorical {stray} are not among data.features")
        numeric = [c for c in features if c not in self.categorical]
        return numeric, [c for c in features if c in self.categorical]

    def _kept(self, table: Table, rows: np.ndarray) -> list[int]:
        """The rows that stay under the missing-value policy."""
        numeric, cats = self._columns(table)
        cols = [table.index(c) for c in [self.label, *numeric, *cats]]
        names = [self.label, *numeric, *cats]
        kept = []
        for i in rows.tolist():
            row = table.rows[i]
            gaps = [(n, c) for n, c in zip(names, cols, strict=True) if self._missing(row[c])]
            if not gaps:
                kept.append(i)
            elif self.missing == "error":
                name, c = gaps[0]
                raise SiteDataError(
                    f"{table.where(i)}: column {name!r} has no value ({row[c]!r}, one of "
                    f"data.missing_values {self.missing_values}); data.missing = 'error' "
                    "refuses missing cells: fill them, or set data.missing = 'drop' (skip such "
                    "rows) or 'impute' (the federation's mean or a <missing> category); if "
                    f"{row[c]!r} is a real value, leave it out of data.missing_values"
                )
            elif self.missing == "impute" and self.label not in (n for n, _ in gaps):
                kept.append(i)
        return kept

    def _number(self, table: Table, i: int, col: str, cell: Any) -> float:
        if isinstance(cell, (int, float)) and not isinstance(cell, bool):
            return float(cell)
        try:
            value = float(cell)
        except (TypeError, ValueError):
            raise SiteDataError(
                f"{table.where(i)}, column {col!r}: {cell!r} is not a number; list the column "
                "in data.categorical if it holds categories, or fix the value"
            ) from None
        if not math.isfinite(value):
            raise SiteDataError(f"{table.where(i)}, column {col!r}: {cell!r} is not finite")
        return value

    # --- 1. each site's sums --------------------------------------------------------

    def local_stats(self, table: Table, seed: int, site: str) -> Stats:
        train, _ = split_rows(len(table), self.eval_fraction, seed, site)
        rows = self._kept(table, train)
        if not rows:
            raise SiteDataError(f"site {site}: no training rows left after data.missing = 'drop'")
        numeric, cats = self._columns(table)
        out: Stats = {key("n"): float(len(rows))}
        # each feature's place in the file: summed over sites (whose columns are the same),
        # it orders the features wherever the sums arrive in no order (a gRPC map)
        for place, c in enumerate([*numeric, *cats]):
            out[key("col", c)] = float(place)
        for c in numeric:
            j = table.index(c)
            vals = [
                self._number(table, i, c, table.rows[i][j])
                for i in rows
                if not self._missing(table.rows[i][j])
            ]
            arr = np.asarray(vals, dtype=np.float64)
            out[key("num", c, "count")] = float(arr.size)
            out[key("num", c, "sum")] = float(arr.sum())
            out[key("num", c, "sumsq")] = float((arr * arr).sum())
        for c in cats:
            j = table.index(c)
            for i in rows:
                cell = table.rows[i][j]
                v = _MISSING_CATEGORY if self._missing(cell) else _text(cell)
                out[key("cat", c, v)] = out.get(key("cat", c, v), 0.0) + 1.0
        j = table.index(self.label)
        if self.task == "classification":
            for i in rows:
                v = _text(table.rows[i][j])
                out[key("label", v)] = out.get(key("label", v), 0.0) + 1.0
        else:
            for i in rows:
                self._number(table, i, self.label, table.rows[i][j])
        return out

    # --- 2. the federation's preprocessing -------------------------------------------

    def preprocessing(self, stats: Stats) -> dict[str, Any]:
        numeric: dict[str, dict[str, float]] = {}
        categories: dict[str, list[str]] = {}
        labels: list[str] = []
        place: dict[str, float] = {}
        for k, v in stats.items():
            parts = unkey(k)
            if parts[0] == "num":
                numeric.setdefault(parts[1], {})[parts[2]] = v
            elif parts[0] == "cat":
                categories.setdefault(parts[1], []).append(parts[2])
            elif parts[0] == "label":
                labels.append(parts[1])
            elif parts[0] == "col":
                place[parts[1]] = v
        columns = self.features or sorted(
            [*numeric, *categories], key=lambda c: (place.get(c, 0.0), c)
        )
        order = [c for c in columns if c in numeric]
        mean, std = [], []
        for c in order:
            s = numeric[c]
            n = max(s.get("count", 0.0), 1.0)
            m = s.get("sum", 0.0) / n
            var = max(s.get("sumsq", 0.0) / n - m * m, 0.0)
            mean.append(m)
            std.append(math.sqrt(var) if var > 1e-24 else 1.0)
        if self.task == "classification" and len(labels) < 2:
            raise SiteDataError(
                f"data.label {self.label!r}: the sites hold {len(labels)} distinct label(s) "
                f"({labels}); classification needs at least 2"
            )
        return {
            "numeric": order,
            "mean": mean,
            "std": std,
            "categories": {c: sorted_values(categories[c]) for c in columns if c in categories},
            "labels": sorted_values(labels) if self.task == "classification" else None,
            "rows": int(stats.get(key("n"), 0)),
        }

    def shape(self, prep: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
        width = len(prep["numeric"]) + sum(len(v) for v in prep["categories"].values())
        labels = prep["labels"]
        return (width,), (len(labels) if labels is not None else None)

    # --- 3. each site's examples ------------------------------------------------------

    def encode(self, table: Table, rows: list[int], prep: Mapping[str, Any]) -> TensorDataset:
        numeric: list[str] = list(prep["numeric"])
        cats: dict[str, list[str]] = dict(prep["categories"])
        have_num, have_cat = self._columns(table)
        if sorted(have_num) != sorted(numeric) or sorted(have_cat) != sorted(cats):
            raise SiteDataError(
                f"{table.path}: its features {sorted(have_num + have_cat)} differ from the "
                f"federation's {sorted(numeric + list(cats))}"
            )
        x = np.zeros((len(rows), len(numeric) + sum(len(v) for v in cats.values())), np.float32)
        mean = np.asarray(prep["mean"], np.float64)
        std = np.asarray(prep["std"], np.float64)
        for k, c in enumerate(numeric):
            j = table.index(c)
            col = [table.rows[i][j] for i in rows]
            vals = np.asarray(
                [
                    mean[k] if self._missing(v) else self._number(table, i, c, v)
                    for i, v in zip(rows, col, strict=True)
                ],
                np.float64,
            )
            x[:, k] = (vals - mean[k]) / std[k] if self.standardize else vals
        at = len(numeric)
        for c, vocab in cats.items():
            j, pos = table.index(c), {v: n for n, v in enumerate(vocab)}
            for r, i in enumerate(rows):
                cell = table.rows[i][j]
                n = pos.get(_MISSING_CATEGORY if self._missing(cell) else _text(cell))
                if n is not None:  # a category no site trained on: all zeros
                    x[r, at + n] = 1.0
            at += len(vocab)
        j = table.index(self.label)
        labels = prep["labels"]
        if labels is None:
            y = torch.tensor(
                [[self._number(table, i, self.label, table.rows[i][j])] for i in rows],
                dtype=torch.float32,
            )
        else:
            pos = {v: n for n, v in enumerate(labels)}
            idx = []
            for i in rows:
                v = _text(table.rows[i][j])
                if v not in pos:
                    raise SiteDataError(
                        f"{table.where(i)}: label {v!r} is not among the federation's labels "
                        f"{labels}"
                    )
                idx.append(pos[v])
            y = torch.tensor(idx, dtype=torch.long)
        return TensorDataset(torch.from_numpy(x), y)

    def client_data(
        self, table: Table, prep: Mapping[str, Any], seed: int, site: str
    ) -> ClientData:
        train, held = split_rows(len(table), self.eval_fraction, seed, site)
        tr = self._kept(table, train)
        if not tr:
            raise SiteDataError(f"site {site}: no training rows left after data.missing = 'drop'")
        te = self._kept(table, held)
        return ClientData(
            self.encode(table, tr, prep), self.encode(table, te, prep) if te else None
        )


@register("dataset", "text")
class TextData(SiteData):
    """``dataset = "text"``: short texts with a class label (tweets, messages, tickets),
    each site's own JSONL or CSV. Words and word pairs are hashed into ``features``
    buckets (scikit-learn's ``HashingVectorizer``): no vocabulary is built, so nothing
    about a site's words leaves it; only the label set is the federation's."""

    dataset: Literal["text"] = "text"
    text: str = "text"
    label: str = "label"
    features: int = Field(4096, ge=16, le=2**20)
    ngrams: int = Field(2, ge=1, le=3)
    eval_fraction: float = Field(0.2, ge=0, lt=1)

    def _rows(self, table: Table, rows: np.ndarray) -> list[int]:
        t, y = table.index(self.text), table.index(self.label)
        kept = []
        for i in rows.tolist():
            text, label = table.rows[i][t], table.rows[i][y]
            if not str(text or "").strip() or not str(label if label is not None else "").strip():
                continue  # an unlabelled or empty message teaches nothing ("NA" is a message)
            kept.append(i)
        return kept

    def local_stats(self, table: Table, seed: int, site: str) -> Stats:
        train, _ = split_rows(len(table), self.eval_fraction, seed, site)
        rows = self._rows(table, train)
        if not rows:
            raise SiteDataError(f"site {site}: no labelled text among its training rows")
        out: Stats = {key("n"): float(len(rows))}
        y = table.index(self.label)
        for i in rows:
            v = _text(table.rows[i][y])
            out[key("label", v)] = out.get(key("label", v), 0.0) + 1.0
        return out

    def preprocessing(self, stats: Stats) -> dict[str, Any]:
        labels = [unkey(k)[1] for k in stats if unkey(k)[0] == "label"]
        if len(labels) < 2:
            raise SiteDataError(f"data.label {self.label!r}: the sites hold {len(labels)} label(s)")
        return {"labels": sorted_values(labels), "rows": int(stats.get(key("n"), 0))}

    def shape(self, prep: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
        return (self.features,), len(prep["labels"])

    def encode(self, table: Table, rows: list[int], prep: Mapping[str, Any]) -> TensorDataset:
        from sklearn.feature_extraction.text import HashingVectorizer

        hv = HashingVectorizer(
            n_features=self.features, ngram_range=(1, self.ngrams), alternate_sign=False
        )
        t, y = table.index(self.text), table.index(self.label)
        x = hv.transform([str(table.rows[i][t]) for i in rows]).toarray().astype(np.float32)
        pos = {v: n for n, v in enumerate(prep["labels"])}
        labels = []
        for i in rows:
            v = _text(table.rows[i][y])
            if v not in pos:
                raise SiteDataError(
                    f"{table.where(i)}: label {v!r} is not among the federation's {prep['labels']}"
                )
            labels.append(pos[v])
        return TensorDataset(torch.from_numpy(x), torch.tensor(labels, dtype=torch.long))

    def client_data(
        self, table: Table, prep: Mapping[str, Any], seed: int, site: str
    ) -> ClientData:
        train, held = split_rows(len(table), self.eval_fraction, seed, site)
        tr, te = self._rows(table, train), self._rows(table, held)
        if not tr:
            raise SiteDataError(f"site {site}: no labelled text among its training rows")
        return ClientData(
            self.encode(table, tr, prep), self.encode(table, te, prep) if te else None
        )
