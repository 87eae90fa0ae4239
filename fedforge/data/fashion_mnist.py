"""Fashion-MNIST, read from local IDX files (no download).

Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms" (arXiv:1708.07747, 2017): 60,000 train and 10,000
test grayscale 28x28 images of 10 clothing classes. The IDX file format is the
one defined for MNIST by LeCun et al.: a big-endian header (magic number, then
one uint32 per dimension) followed by raw uint8 data.

Where the files are looked up, first match wins: the ``path`` argument, the
``FEDFORGE_FASHION_MNIST_DIR`` environment variable, then ``DEFAULT_DIR``
(where the Debian package ``dataset-fashion-mnist`` installs them). Each file
may be gzip-compressed (``*.gz``, as shipped) or plain.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DEFAULT_DIR",
    "ENV_VAR",
    "FASHION_MNIST_CLASSES",
    "MEAN",
    "STD",
    "fashion_mnist",
    "resolve_dir",
]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "FEDFORGE_FASHION_MNIST_DIR"
MEAN = 0.2860
STD = 0.3530
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IMAGES_MAGIC = 2051  # 0x00000803: uint8 data, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: uint8 data, 1 dimension
_ROWS = _COLS = 28
_INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian package, puts the files in "
    f"{DEFAULT_DIR}), or pass path= / set {ENV_VAR} to a folder holding "
    "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz"
)


def resolve_dir(path: str | Path | None = None) -> Path:
    """The folder to read: ``path``, else ``$FEDFORGE_FASHION_MNIST_DIR``, else ``DEFAULT_DIR``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(DEFAULT_DIR)


def _find_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {folder / (stem + '.gz')} not found; {_INSTALL_HINT}"
    )


def _read_bytes(file: Path) -> bytes:
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{file}: cannot read as a (gzip-compressed) IDX file: {err}") from err


def _parse_idx(file: Path, magic: int, ndim: int) -> npt.NDArray[np.uint8]:
    raw = _read_bytes(file)
    header_len = 4 * (1 + ndim)
    if len(raw) < header_len:
        raise ValueError(
            f"{file}: {len(raw)} bytes is too short for an IDX header ({header_len} bytes)"
        )
    found_magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header_len])
    if found_magic != magic:
        raise ValueError(
            f"{file}: magic number {found_magic}, expected {magic} "
            f"({'images, idx3' if magic == _IMAGES_MAGIC else 'labels, idx1'}); wrong or corrupt file"
        )
    if ndim == 3 and (dims[1], dims[2]) != (_ROWS, _COLS):
        raise ValueError(f"{file}: images are {dims[1]}x{dims[2]}, expected {_ROWS}x{_COLS}")
    expected = header_len + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(
            f"{file}: {len(raw)} bytes, but the header dims {tuple(dims)} imply {expected}; "
            "truncated or corrupt file"
        )
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    return arr


@functools.lru_cache(maxsize=4)
def _load_split(folder: str, split: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Parsed (images (N, 28, 28), labels (N,)) uint8 arrays; read-only, cached per folder."""
    images_file = _find_file(Path(folder), f"{split}-images-idx3-ubyte")
    labels_file = _find_file(Path(folder), f"{split}-labels-idx1-ubyte")
    images = _parse_idx(images_file, _IMAGES_MAGIC, 3)
    labels = _parse_idx(labels_file, _LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_file}: label {labels.max()} outside 0..9")
    return images, labels  # np.frombuffer over bytes: already read-only


def _to_dataset(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], normalize: bool
) -> TensorDataset:
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1).div_(255.0)
    if normalize:
        x.sub_(MEAN).div_(STD)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y)


def fashion_mnist(
    path: str | Path | None = None, normalize: bool = True
) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST as ``(train, test)`` ``TensorDataset``s of ``(images, labels)``.

    Images are float32 ``(N, 1, 28, 28)``: pixel / 255 in ``[0, 1]``, then, with
    ``normalize``, ``(x - 0.2860) / 0.3530``. Labels are int64 in ``0..9``
    (names in ``FASHION_MNIST_CLASSES``). Train has 60,000 examples, test 10,000.

    Raises ``FileNotFoundError`` (with install instructions) when the folder or
    a file is missing and ``ValueError`` naming the file when one is malformed.
    Parsed files are cached in-process per resolved folder, so later calls only
    pay for the float conversion.
    """
    folder = resolve_dir(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist; {_INSTALL_HINT}")
    key = str(folder.resolve())
    train = _to_dataset(*_load_split(key, "train"), normalize)
    test = _to_dataset(*_load_split(key, "t10k"), normalize)
    return train, test
