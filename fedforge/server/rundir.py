"""The run directory: everything a run leaves behind, readable without fedforge.

RUN_DIR/
  config.yaml            the resolved configuration
  metrics.jsonl          one JSON record per round (the source of truth)
  metrics.csv            the same, as a table
  tensorboard/           TensorBoard event files
  plot.png               loss and accuracy per round
  confusion_matrix.json  the latest evaluation's confusion matrices, when they are reported
  confusion_matrix.png   the same, drawn
  checkpoints/round_N/   safetensors + JSON (see checkpoint.py)
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from fedforge.server.history import History, Record


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._tb: Any = None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, text: str) -> None:
        (self.path / "config.yaml").write_text(text)

    def read_config(self) -> str:
        p = self.path / "config.yaml"
        if not p.is_file():
            raise FileNotFoundError(
                f"{self.path} has no config.yaml; is it a fedforge run directory?"
            )
        return p.read_text()

    def log_round(self, record: Record) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._tensorboard(record)
        self._confusion(record)
        self._samples(record)

    def _samples(self, record: Record) -> None:
        """A language model's answers to the evaluation prompts, appended to samples.md."""
        samples = record.get("samples")
        if not isinstance(samples, dict) or not samples:
            return
        with open(self.path / "samples.md", "a") as f:
            f.write(f"## round {record['round']}\n\n")
            for prompt, reply in samples.items():
                f.write(f"**{prompt}**\n\n{reply}\n\n")

    def rewrite_metrics(self, history: History) -> None:
        """Make metrics.jsonl hold exactly ``history`` (used when resuming)."""
        with open(self.metrics_path, "w") as f:
            for r in history:
                f.write(json.dumps(r, sort_keys=True) + "\n")

    def _tensorboard(self, record: Record) -> None:
        try:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tensorboard"))
        except ImportError:  # tensorboard is optional at run time
            return
        for k, v in record.items():
            numeric = isinstance(v, int | float) and not isinstance(v, bool)
            if numeric and k != "round" and math.isfinite(float(v)):
                self._tb.add_scalar(k, float(v), record["round"])
        self._tb.flush()

    def _confusion(self, record: Record) -> None:
        """The round's confusion matrices (``central_`` and/or ``federated_``), if any,
        as JSON and as a picture: only the latest evaluation's are kept."""
        found = {
            where: record[f"{where}_confusion_matrix"]
            for where in ("central", "federated")
            if isinstance(record.get(f"{where}_confusion_matrix"), list)
        }
        if not found:
            return
        tmp = self.path / "confusion_matrix.json.tmp"
        tmp.write_text(json.dumps({"round": record["round"], **found}) + "\n")
        os.replace(tmp, self.path / "confusion_matrix.json")  # a reader never sees half
        _plot_confusion(found, record["round"], self.path / "confusion_matrix.png")

    def finish(self, history: History) -> None:
        self.write_csv(history)
        self.plot(history)
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def write_csv(self, history: History) -> None:
        keys: list[str] = ["round"]
        for r in history:
            for k, v in r.items():
                if k not in keys and not isinstance(v, dict | list):
                    keys.append(k)
        with open(self.path / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for r in history:
                w.writerow(r)

    def plot(self, history: History) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [
            ("loss", ["train_loss", "central_loss", "federated_loss"]),
            ("accuracy", ["central_accuracy", "federated_accuracy"]),
        ]
        panels = [(t, [k for k in ks if history.series(k)[0]]) for t, ks in panels]
        panels = [(t, ks) for t, ks in panels if ks]
        if not panels:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
        for ax, (title, keys) in zip(axes[0], panels, strict=True):
            for k in keys:
                xs, ys = history.series(k)
                ax.plot(xs, ys, marker="o", markersize=3, label=k)
            ax.set_xlabel("round")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        out = self.path / "plot.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out


def _plot_confusion(matrices: dict[str, list[list[int]]], round_: int, out: Path) -> None:
    """Each confusion matrix (rows: true class, columns: predicted) as a heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.0), squeeze=False)
    for ax, (where, m) in zip(axes[0], matrices.items(), strict=True):
        image = ax.imshow(m, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{where}, round {round_}")
        if len(m) <= 12:  # counts stay legible up to about a dozen classes
            ax.set_xticks(range(len(m)))
            ax.set_yticks(range(len(m)))
            peak = max(max(row) for row in m) or 1
            for i, row in enumerate(m):
                for j, n in enumerate(row):
                    color = "white" if n > peak / 2 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
