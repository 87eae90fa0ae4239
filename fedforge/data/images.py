"""``[data] dataset = "images"``: image folders that sites bring, one subfolder per class.

Every image is converted to ``channels`` (1: grey, 3: RGB) and resized to ``size`` x
``size`` (Pillow); pixels are scaled to [0, 1] and, with ``normalize``, standardized per
channel with the federation's mean and deviation, computed from the sites' pixel sums.
The class set is the union of the sites' subfolder names (a site may lack some classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
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

__all__ = ["ImageData"]


@register("dataset", "images")
class ImageData(SiteData):
    """Image folders (see the module's doc)."""

    dataset: Literal["images"] = "images"
    size: int = Field(28, ge=4, le=1024)
    channels: Literal[1, 3] = 1
    normalize: bool = True
    eval_fraction: float = Field(0.2, ge=0, lt=1)

    def _pixels(self, table: Table, rows: list[int]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.zeros((len(rows), self.channels, self.size, self.size), np.float32)
        mode = "L" if self.channels == 1 else "RGB"
        for r, i in enumerate(rows):
            path = table.rows[i][0]
            try:
                with Image.open(path) as src:
                    im = src.convert(mode).resize((self.size, self.size), Image.Resampling.BILINEAR)
                    a = np.asarray(im, np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as exc:
                raise SiteDataError(f"{path}: not a readable image ({exc})") from None
            out[r] = a[None] if self.channels == 1 else a.transpose(2, 0, 1)
        return out

    def local_stats(self, table: Table, seed: int, site: str) -> Stats:
        if table.columns != ["image", "label"]:
            raise SiteDataError(f"{table.path}: data.dataset = 'images' needs an image folder")
        train, _ = split_rows(len(table), self.eval_fraction, seed, site)
        rows = train.tolist()
        out: Stats = {key("n"): float(len(rows))}
        for i in rows:
            v = str(table.rows[i][1])
            out[key("label", v)] = out.get(key("label", v), 0.0) + 1.0
        if self.normalize:
            for start in range(0, len(rows), 512):  # a block at a time: bounded memory
                px = self._pixels(table, rows[start : start + 512]).astype(np.float64)
                for c in range(self.channels):
                    out[key("px", c, "sum")] = out.get(key("px", c, "sum"), 0.0) + float(
                        px[:, c].sum()
                    )
                    out[key("px", c, "sumsq")] = out.get(key("px", c, "sumsq"), 0.0) + float(
                        (px[:, c] ** 2).sum()
                    )
                    out[key("px", c, "count")] = out.get(key("px", c, "count"), 0.0) + float(
                        px[:, c].size
                    )
        return out

    def preprocessing(self, stats: Stats) -> dict[str, Any]:
        labels = [unkey(k)[1] for k in stats if unkey(k)[0] == "label"]
        if len(labels) < 2:
            raise SiteDataError(f"the sites' image folders hold {len(labels)} class(es); need 2+")
        mean, std = [], []
        for c in range(self.channels):
            n = max(stats.get(key("px", c, "count"), 0.0), 1.0)
            m = stats.get(key("px", c, "sum"), 0.0) / n
            var = max(stats.get(key("px", c, "sumsq"), 0.0) / n - m * m, 0.0)
            mean.append(m if self.normalize else 0.0)
            std.append(float(np.sqrt(var)) if self.normalize and var > 1e-12 else 1.0)
        return {
            "labels": sorted_values(labels),
            "mean": mean,
            "std": std,
            "rows": int(stats.get(key("n"), 0)),
        }

    def shape(self, prep: Mapping[str, Any]) -> tuple[tuple[int, ...], int | None]:
        return (self.channels, self.size, self.size), len(prep["labels"])

    def encode(self, table: Table, rows: list[int], prep: Mapping[str, Any]) -> TensorDataset:
        px = self._pixels(table, rows)
        mean = np.asarray(prep["mean"], np.float32)[None, :, None, None]
        std = np.asarray(prep["std"], np.float32)[None, :, None, None]
        pos = {v: n for n, v in enumerate(prep["labels"])}
        y = []
        for i in rows:
            v = str(table.rows[i][1])
            if v not in pos:
                raise SiteDataError(f"{table.where(i)}: class {v!r} is not the federation's")
            y.append(pos[v])
        return TensorDataset(torch.from_numpy((px - mean) / std), torch.tensor(y, dtype=torch.long))

    def client_data(
        self, table: Table, prep: Mapping[str, Any], seed: int, site: str
    ) -> ClientData:
        train, held = split_rows(len(table), self.eval_fraction, seed, site)
        return ClientData(
            self.encode(table, train.tolist(), prep),
            self.encode(table, held.tolist(), prep) if len(held) else None,
        )
