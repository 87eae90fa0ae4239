"""Dataset loaders: tabular, Fashion-MNIST, Shakespeare (fedforge.data)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fedforge.data import (
    FASHION_MNIST_CLASSES,
    VOCAB,
    VOCAB_SIZE,
    NextCharConcat,
    NextCharDataset,
    breast_cancer,
    decode,
    digits,
    encode,
    fashion_mnist,
    parse_plays,
    shakespeare,
    synthetic_linear,
)
from fedforge.data.fashion_mnist import DEFAULT_DIR, ENV_VAR
from fedforge.data.shakespeare import client_id, min_chars_needed

# --------------------------------------------------------------------------- tabular


def test_breast_cancer_shapes_and_train_standardization() -> None:
    train, test = breast_cancer(test_fraction=0.2, seed=0)
    x_tr, y_tr = train.tensors
    x_te, y_te = test.tensors
    assert x_tr.shape == (455, 30) and x_te.shape == (114, 30)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert torch.allclose(x_tr.mean(0), torch.zeros(30), atol=1e-5)
    assert torch.allclose(x_tr.std(0, unbiased=False), torch.ones(30), atol=1e-4)
    assert not torch.allclose(x_te.mean(0), torch.zeros(30), atol=1e-3)  # test stats not used
    # Stratified: 357 benign of 569 (62.7 %) in both splits.
    assert abs(y_tr.float().mean().item() - 357 / 569) < 0.01
    assert abs(y_te.float().mean().item() - 357 / 569) < 0.01
    assert set(y_te.tolist()) == {0, 1}


def test_breast_cancer_seeded() -> None:
    a, _ = breast_cancer(seed=1)
    b, _ = breast_cancer(seed=1)
    c, _ = breast_cancer(seed=2)
    assert torch.equal(a.tensors[0], b.tensors[0])
    assert not torch.equal(a.tensors[0], c.tensors[0])


def test_digits_guards_constant_pixels() -> None:
    train, test = digits(test_fraction=0.25, seed=0)
    x_tr, y_tr = train.tensors
    assert x_tr.shape[1] == 64 and len(train) + len(test) == 1797
    assert torch.isfinite(x_tr).all() and torch.isfinite(test.tensors[0]).all()
    assert torch.allclose(x_tr.mean(0), torch.zeros(64), atol=1e-5)
    std = x_tr.std(0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).sum() + (std == 0).sum() == 64  # 1, or 0 for blank pixels
    assert (std == 0).sum() >= 1  # pixel (0, 0) is always blank
    assert sorted(set(y_tr.tolist())) == list(range(10))


def test_synthetic_linear() -> None:
    ds = synthetic_linear(2000, weight=3.0, bias=0.5, noise=0.1, seed=0)
    x, y = ds.tensors
    assert x.shape == (2000, 1) and y.shape == (2000, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    design = torch.cat([x, torch.ones_like(x)], dim=1).double()
    w, b = torch.linalg.lstsq(design, y.double()).solution.flatten().tolist()
    assert abs(w - 3.0) < 0.02 and abs(b - 0.5) < 0.01
    residual = y - (3.0 * x + 0.5)
    assert 0.09 < residual.std().item() < 0.11
    assert torch.equal(
        synthetic_linear(5, seed=3).tensors[0], synthetic_linear(5, seed=3).tensors[0]
    )


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_examples": 0}, "num_examples"),
        ({"num_examples": 5, "noise": -1.0}, "noise"),
        ({"num_examples": 5, "weight": float("nan")}, "weight"),
    ],
)
def test_synthetic_linear_bad_arguments(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        synthetic_linear(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_tabular_bad_test_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        breast_cancer(test_fraction=fraction)


# ---------------------------------------------------------------------- Fashion-MNIST


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    head = struct.pack(">IIII", 2051, len(images), 28, 28)
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(head + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 5, 7], images[2] = 255, 51, 102
    write_idx(tmp_path, "train", images, np.array([0, 9, 4]))
    write_idx(tmp_path, "t10k", images[:2], np.array([1, 2]))
    train, test = fashion_mnist(tmp_path, normalize=False)
    x, y = train.tensors
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [0, 9, 4] and y.dtype == torch.int64
    assert x[0, 0, 0, 0].item() == 1.0 and x[1, 0, 5, 7].item() == pytest.approx(0.2)
    assert x[2].eq(0.4).all()
    assert len(test) == 2
    normed, _ = fashion_mnist(str(tmp_path), normalize=True)
    assert normed.tensors[0][0, 0, 0, 0].item() == pytest.approx((1.0 - 0.2860) / 0.3530)
    assert normed.tensors[0][0, 0, 0, 1].item() == pytest.approx(-0.2860 / 0.3530)


def test_fashion_mnist_rejects_bad_magic(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", np.zeros((2, 28, 28)), np.array([0, 1]))
    write_idx(tmp_path, "t10k", np.zeros((2, 28, 28)), np.array([0, 1]))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">II", 2051, 2) + bytes(2))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*magic number 2051"):
        fashion_mnist(tmp_path)


def test_fashion_mnist_rejects_truncated_file(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", np.zeros((2, 28, 28)), np.array([0, 1]))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">IIII", 2051, 2, 28, 28) + bytes(100))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*truncated"):
        fashion_mnist(tmp_path)


def test_fashion_mnist_missing_folder_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "nowhere")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "also-nowhere"))
    with pytest.raises(FileNotFoundError, match="also-nowhere") as err:
        fashion_mnist()
    assert ENV_VAR in str(err.value) and "path=" in str(err.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        fashion_mnist(tmp_path)  # folder exists, files do not


@pytest.mark.skipif(not Path(DEFAULT_DIR).is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files() -> None:
    train, test = fashion_mnist()
    x, y = train.tensors
    assert x.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert y.dtype == torch.int64 and y.min().item() == 0 and y.max().item() == 9
    assert torch.bincount(y).tolist() == [6000] * 10
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    raw, _ = fashion_mnist(normalize=False)
    assert raw.tensors[0].min().item() == 0.0 and raw.tensors[0].max().item() == 1.0
    assert len(FASHION_MNIST_CLASSES) == 10


# ------------------------------------------------------------------------ Shakespeare


def test_parse_plays_counts() -> None:
    plays = parse_plays()
    assert len({title for title, _ in plays}) == 38
    assert len(plays) == 1418
    assert 4_400_000 < sum(len(t) for t in plays.values()) < 4_430_000
    hamlet = plays[("Hamlet", "HAMLET")]
    assert hamlet.startswith("A little more than kin, and less than kind.\n")
    assert "Romeo and Juliet" in {t for t, _ in plays}
    assert ("Romeo and Juliet", "NURSE") in plays  # "Nurse" and "NURSE" are merged
    assert ("Measure for Measure", "ISABELLA") in plays  # title from the file name
    joined = "".join(plays.values())
    assert "**" not in joined and "_" not in joined and "\\" not in joined


def test_vocab_round_trip_and_normalization() -> None:
    assert VOCAB_SIZE == 80 == len(VOCAB)
    assert decode(encode(VOCAB)) == VOCAB
    assert encode(VOCAB).tolist() == list(range(80))
    line = "To be, or not to be: that is the question!\n"
    ids = encode(line)
    assert ids.dtype == np.uint8 and len(ids) == len(line)
    assert decode(ids) == line
    assert (
        decode(encode("\u2018Tis \u201cnaught\u201d \u2014 caf\u00e9\u2026"))
        == '\'Tis "naught" - cafe.'
    )
    assert decode(encode("a{b}c*d\u4e2d")) == "a b}c d "  # outside the vocabulary -> space
    with pytest.raises(ValueError, match="ids"):
        decode([80])


def test_next_char_windows() -> None:
    text = "abcdefghij"
    ds = NextCharDataset(text, seq_len=3, stride=1)
    assert len(ds) == 7
    x, y = ds[0]
    assert decode(x) == "abc" and decode([int(y)]) == "d"
    assert x.dtype == torch.int64 and y.dtype == torch.int64 and y.dim() == 0
    x, y = ds[6]
    assert decode(x) == "ghi" and VOCAB[int(y)] == "j"
    assert decode(ds[-1][0]) == "ghi"
    with pytest.raises(IndexError):
        ds[7]
    strided = NextCharDataset(text, seq_len=3, stride=3)
    assert len(strided) == 3  # windows start at 0, 3, 6
    assert [decode(strided[i][0]) + VOCAB[int(strided[i][1])] for i in range(3)] == [
        "abcd",
        "defg",
        "ghij",
    ]
    assert len(NextCharDataset("abc", seq_len=3)) == 0
    bx, by = ds.batch([6, 0, 2])
    assert bx.shape == (3, 3) and [decode(r) for r in bx] == ["ghi", "abc", "cde"]
    assert [VOCAB[i] for i in by.tolist()] == ["j", "d", "f"]
    with pytest.raises(ValueError, match="seq_len"):
        NextCharDataset(text, seq_len=0)
    with pytest.raises(ValueError, match="stride"):
        NextCharDataset(text, stride=0)


def test_next_char_memory_is_one_byte_per_char() -> None:
    ds = NextCharDataset("to be or not " * 800, seq_len=80)
    assert ds.ids.dtype == torch.uint8 and ds.ids.numel() == 10_400
    assert np.shares_memory(ds._windows, ds.ids.numpy())  # windows are a view, not a copy
    assert ds._windows.base is not None
    blob = pickle.dumps(ds)  # for process backends: the text travels, not the windows
    assert len(blob) < 12_000
    clone = pickle.loads(blob)
    assert len(clone) == len(ds) and torch.equal(clone.batch([5])[0], ds.batch([5])[0])


def test_next_char_with_dataloader() -> None:
    text = "the quick brown fox jumps over the lazy dog\n" * 3
    ds = NextCharDataset(text, seq_len=10, stride=2)
    batches = list(DataLoader(ds, batch_size=8, shuffle=False))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (len(ds), 10) and y.shape == (len(ds),)
    ids = encode(text)
    for i in (0, 5, len(ds) - 1):
        assert x[i].tolist() == ids[2 * i : 2 * i + 10].tolist()
        assert y[i].item() == ids[2 * i + 10]


def test_shakespeare_client_counts() -> None:
    assert shakespeare(min_chars=10_000).num_clients == 137
    assert shakespeare(min_chars=1_000).num_clients == 656


def test_shakespeare_train_test_is_head_and_tail() -> None:
    data = shakespeare(min_chars=10_000, max_clients=5, seq_len=20, test_fraction=0.2, seed=0)
    plays = parse_plays()
    by_id = {client_id(*key): text for key, text in plays.items()}
    assert data.num_classes == 80 and data.input_shape == (20,)
    for cid, client in data.clients.items():
        train, test = client.train, client.test
        assert isinstance(train, NextCharDataset) and isinstance(test, NextCharDataset)
        text = by_id[cid]
        n = len(text)
        assert test.num_chars == round(0.2 * n) and train.num_chars + test.num_chars == n
        assert decode(test.ids) == decode(encode(text[-test.num_chars :]))  # the tail
        assert decode(train.ids) == decode(encode(text[: train.num_chars]))  # the head
        assert len(train) == train.num_chars - 20 and len(test) == test.num_chars - 20
        x, y = train[3]
        assert decode(x) + VOCAB[int(y)] == decode(encode(text[3:24]))
    central = data.test
    assert isinstance(central, NextCharConcat)
    sizes = [len(c.test) for c in data.clients.values() if isinstance(c.test, NextCharDataset)]
    assert len(central) == sum(sizes)
    picked = [sizes[0] - 1, 0, sizes[0], len(central) - 1]
    batched = central.__getitems__(picked)
    for index, (bx, by) in zip(picked, batched, strict=True):
        ix, iy = central[index]
        assert torch.equal(bx, ix) and torch.equal(by, iy)


def test_shakespeare_max_clients_is_seeded() -> None:
    a = shakespeare(min_chars=10_000, max_clients=10, seed=1)
    b = shakespeare(min_chars=10_000, max_clients=10, seed=1)
    c = shakespeare(min_chars=10_000, max_clients=10, seed=2)
    assert list(a.clients) == list(b.clients) == sorted(a.clients)
    assert list(a.clients) != list(c.clients)
    assert all("/" in cid for cid in a.clients)
    full = shakespeare(min_chars=10_000)
    assert "hamlet/HAMLET" in full.clients and "romeo-and-juliet/NURSE" in full.clients
    assert shakespeare(min_chars=10_000, test_fraction=0.0).test is None


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"min_chars": 10**8}, "min_chars"),
        ({"min_chars": 100}, "min_chars"),
        ({"min_chars": 10_000, "max_clients": 500}, "max_clients"),
        ({"max_clients": 0}, "max_clients"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seq_len": 0}, "seq_len"),
        ({"stride": 0}, "stride"),
    ],
)
def test_shakespeare_bad_arguments(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        shakespeare(**kwargs)  # type: ignore[arg-type]


def test_min_chars_needed() -> None:
    assert min_chars_needed(80, 0.0) == 81
    n = min_chars_needed(80, 0.2)
    assert n == 403  # 0.2 * 403 = 80.6 rounds to 81 test chars; 322 train chars
    assert round(0.2 * (n - 1)) < 81
    assert min_chars_needed(80, 0.5) == 162  # 81 + 81
    assert min_chars_needed(10, 0.9) == 106  # 106 - round(95.4) = 11 train chars = seq_len + 1
