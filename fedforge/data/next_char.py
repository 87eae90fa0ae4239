"""Sliding-window next-character prediction over one client's text.

The task of McMahan et al. (AISTATS 2017) and LEAF's Shakespeare benchmark
(Caldas et al. 2018): given ``seq_len`` characters, predict the next one.
Window ``i`` starts at ``i * stride``; its input is ``ids[start:start+seq_len]``
and its target is ``ids[start+seq_len]``.

Windows are never materialized: the dataset keeps only the ``uint8`` id
tensor (one byte per character) and slices a window on demand, so memory is
O(text) rather than O(text x seq_len). ``batch`` / ``__getitems__`` gather a
whole batch with one indexing operation on a strided view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from fedforge.data._checks import check_int
from fedforge.data.vocab import VOCAB_SIZE, encode

__all__ = ["NextCharConcat", "NextCharDataset"]

Sample = tuple[Tensor, Tensor]


class NextCharDataset(Dataset[Sample]):
    """``(x, y)`` windows of one text: ``x`` int64 ``(seq_len,)``, ``y`` int64 scalar.

    ``text`` may be a ``str`` (encoded with ``fedforge.data.vocab.encode``) or
    an array/tensor of ids in ``[0, 80)``. Works with a plain ``DataLoader``
    (default collation gives ``x`` of shape ``(B, seq_len)`` and ``y`` of ``(B,)``).
    """

    def __init__(
        self, text: str | npt.ArrayLike | Tensor, seq_len: int = 80, stride: int = 1
    ) -> None:
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.stride = check_int("stride", stride, 1)
        if isinstance(text, str):
            ids = encode(text)
        else:
            arr = text.detach().cpu().numpy() if isinstance(text, Tensor) else np.asarray(text)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(
                    f"text must be a str or a 1-D integer id array, got dtype {arr.dtype} "
                    f"shape {arr.shape}"
                )
            if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
                raise ValueError(
                    f"ids must be in [0, {VOCAB_SIZE - 1}], got {arr.min()}..{arr.max()}"
                )
            ids = arr.astype(np.uint8)
        self._attach(ids)

    def _attach(self, ids: npt.NDArray[np.uint8]) -> None:
        span = self.seq_len + 1
        self._len = 0 if len(ids) < span else (len(ids) - span) // self.stride + 1
        # (num_windows, seq_len + 1) strided view over the ids: no copy. NumPy fancy
        # indexing on it is single-threaded and fast, which keeps batch fetches cheap
        # even when other processes compete for the cores.
        self._windows: npt.NDArray[np.uint8] = (
            sliding_window_view(ids, span)[:: self.stride]
            if self._len
            else np.empty((0, span), dtype=np.uint8)
        )
        self.ids: Tensor = torch.from_numpy(ids)  # shares memory with the windows

    def __getstate__(self) -> dict[str, object]:
        # Pickle the text only: pickling the window view would copy it window by
        # window, (seq_len + 1) times the text size.
        return {"ids": self.ids.numpy(), "seq_len": self.seq_len, "stride": self.stride}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.seq_len = check_int("seq_len", state["seq_len"], 1)
        self.stride = check_int("stride", state["stride"], 1)
        self._attach(np.ascontiguousarray(state["ids"], dtype=np.uint8))

    @property
    def num_chars(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Sample:
        i = int(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"window {index} out of range for {self._len} windows")
        start = i * self.stride
        x = self.ids[start : start + self.seq_len].long()
        y = self.ids[start + self.seq_len].long()
        return x, y

    def batch(self, indices: Sequence[int] | npt.ArrayLike | Tensor) -> Sample:
        """Stacked ``(x (B, seq_len), y (B,))`` for the given window indices."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -self._len or index.max() >= self._len):
            raise IndexError(f"window indices out of range for {self._len} windows")
        rows = torch.from_numpy(self._windows[index].astype(np.int64))
        return rows[:, :-1], rows[:, -1]

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """Batch fetch used by ``DataLoader`` and fedforge's batch iterator."""
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.unbind(0), strict=True))


class NextCharConcat(ConcatDataset[Sample]):
    """``ConcatDataset`` of ``NextCharDataset``s with a batched ``__getitems__``."""

    datasets: list[NextCharDataset]  # type: ignore[assignment]

    def __init__(self, datasets: Sequence[NextCharDataset]) -> None:
        super().__init__(list(datasets))
        self._ends = np.asarray(self.cumulative_sizes, dtype=np.int64)

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        total = len(self)
        idx = np.where(idx < 0, idx + total, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise IndexError(f"indices out of range for {total} windows")
        which = np.searchsorted(self._ends, idx, side="right")
        out: list[Sample | None] = [None] * len(idx)
        for d in np.unique(which):
            pos = np.flatnonzero(which == d)
            start = 0 if d == 0 else int(self._ends[d - 1])
            x, y = self.datasets[int(d)].batch(idx[pos] - start)
            for p, xi, yi in zip(pos.tolist(), x.unbind(0), y.unbind(0), strict=True):
                out[p] = (xi, yi)
        return [s for s in out if s is not None]
