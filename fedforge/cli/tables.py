"""Tables the ``fedforge`` commands print: the per-round summary of a run."""

from __future__ import annotations

from fedforge.server.history import History

# the named metrics (fedforge.client.metrics) -> short headers; shown where a run has them
_METRICS = {
    "accuracy": "acc",
    "precision": "prec",
    "recall": "rec",
    "f1": "f1",
    "roc_auc": "auc",
    "mse": "mse",
    "mae": "mae",
    "r2": "r2",
    "perplexity": "ppl",
}
_COLUMNS = {  # record key -> short column header
    "round": "round",
    "aggregated": "agg",
    "train_loss": "train loss",
    "central_loss": "test loss",
    **{f"central_{k}": f"test {v}" for k, v in _METRICS.items()},
    **{f"federated_{k}": f"fed {v}" for k, v in _METRICS.items()},
    "epsilon": "epsilon",
    "bytes_up": "up",
    "bytes_down": "down",
    "fit_time_s": "fit s",
}


def _bytes(v: object) -> str:
    if not isinstance(v, int | float):
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{int(v)} B"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def summary_table(history: History, title: str, max_rows: int = 12) -> None:
    from rich.console import Console
    from rich.table import Table

    records = history.records
    if not records:
        return
    keep = records
    if len(records) > max_rows:
        step = max(1, len(records) // (max_rows - 1))
        keep = records[::step]
        if keep[-1] is not records[-1]:
            keep = [*keep, records[-1]]
    cols = [c for c in _COLUMNS if any(c in r for r in records)]
    table = Table(title=title)
    for c in cols:
        table.add_column(_COLUMNS[c], justify="right")
    table.add_column("dropped", justify="right")
    for r in keep:
        dropped = len(r.get("failed", {})) + len(r.get("rejected", {}))
        cells = [_bytes(r.get(c)) if c.startswith("bytes") else _fmt(r.get(c)) for c in cols]
        table.add_row(*cells, str(dropped))
    Console(stderr=False).print(table)
