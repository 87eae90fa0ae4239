"""A site's own data files, read into rows with errors that name the file, line and column.

``read_table(path)`` reads what a site brings (``fedforge client --site``): CSV (header
row; stdlib ``csv``, so a bad row is named by its line), JSONL (one object per line),
Parquet, or a Hugging Face dataset saved with ``save_to_disk`` (a folder of Arrow files,
read offline with ``pyarrow``). The format follows the suffix unless given.

A ``Table`` keeps each cell as read (a string from CSV, a JSON value, an Arrow scalar
converted to Python) and where each row came from, so the schema applied later
(``fedforge.data.table``) can say "bank_a.csv line 17, column 'income': 'n/a' is not a
number" instead of failing deep inside torch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "DataFileError", "Table", "read_table"]

FORMATS = ("csv", "jsonl", "parquet", "hf", "images", "txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SUFFIX = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt",
}


class DataFileError(ValueError):
    """A data file that cannot be read as stated: the message names file, line, column."""


@dataclass(frozen=True)
class Table:
    """Rows of cells under named columns; ``where(i)`` says where row ``i`` came from."""

    path: Path
    columns: list[str]
    rows: list[list[Any]]
    where: Callable[[int], str]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """One column's cells, in row order (``DataFileError`` if there is no such column)."""
        return [r[self.index(name)] for r in self.rows]

    def index(self, name: str) -> int:
        try:
            return self.columns.index(name)
        except ValueError:
            shown = ", ".join(repr(c) for c in self.columns[:20])
            more = f" and {len(self.columns) - 20} more" if len(self.columns) > 20 else ""
            raise DataFileError(
                f"{self.path}: no column {name!r}; its columns are {shown}{more}"
            ) from None


def format_of(path: Path, fmt: str | None = None) -> str:
    """The format ``path`` is read as: ``fmt`` if given, else from its suffix (a folder holding
    ``dataset_info.json`` is a saved Hugging Face dataset)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataFileError(f"{path}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "hf"
        if any(d.is_dir() for d in path.iterdir()):
            return "images"
        raise DataFileError(
            f"{path} is a folder with neither dataset_info.json nor class subfolders: give a "
            "CSV, JSONL or Parquet file, a folder written by a Hugging Face dataset's "
            "save_to_disk, or an image folder (one subfolder of images per class)"
        )
    found = _SUFFIX.get(path.suffix.lower())
    if found is None:
        raise DataFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; name it .csv, "
            f".jsonl or .parquet, or set format = one of {', '.join(FORMATS)}"
        )
    return found


def read_table(path: str | Path, fmt: str | None = None) -> Table:
    """The rows of ``path`` (see the module's doc); ``DataFileError`` names what is wrong."""
    p = Path(path)
    if not p.exists():
        raise DataFileError(f"data file {p} does not exist (paths are relative to the site config)")
    kind = format_of(p, fmt)
    table = {
        "csv": _csv,
        "jsonl": _jsonl,
        "parquet": _parquet,
        "hf": _hf,
        "images": _images,
        "txt": _txt,
    }[kind](p)
    if not table.rows:
        raise DataFileError(f"{p}: no rows of data")
    return table


def _csv(p: Path) -> Table:
    lines: list[int] = []
    rows: list[list[Any]] = []
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataFileError(f"{p}: empty file; a CSV needs a header row of column names")
            columns = [h.strip() for h in header]
            _check_header(p, columns)
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                if len(row) != len(columns):
                    raise DataFileError(
                        f"{p} line {reader.line_num}: {len(row)} fields, the header has "
                        f"{len(columns)}"
                    )
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataFileError(f"{p}: malformed CSV: {exc}") from None
    return Table(p, columns, rows, lambda i: f"{p} line {lines[i]}")


def _check_header(p: Path, columns: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(columns):
        if not c:
            raise DataFileError(f"{p}: column {i + 1} of the header has no name")
        if c in seen:
            raise DataFileError(f"{p}: column {c!r} appears twice in the header")
        seen.add(c)


def _jsonl(p: Path) -> Table:
    columns: list[str] = []
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{p} line {n}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataFileError(
                    f"{p} line {n}: expected a JSON object, got {type(obj).__name__}"
                )
            for k in obj:
                if k not in columns:
                    columns.append(k)
            records.append(obj)
            lines.append(n)
    rows = [[r.get(c) for c in columns] for r in records]
    return Table(p, columns, rows, lambda i: f"{p} line {lines[i]}")


def _arrow(p: Path, table: Any) -> Table:
    columns = [str(c) for c in table.column_names]
    data = table.to_pydict()
    rows = [list(r) for r in zip(*(data[c] for c in columns), strict=True)]
    return Table(p, columns, rows, lambda i: f"{p} row {i + 1}")


def _pyarrow(p: Path) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise DataFileError(
            f"{p}: reading Parquet and saved Hugging Face datasets needs pyarrow: "
            "pip install 'fedforge[data]'"
        ) from None
    return pyarrow


def _parquet(p: Path) -> Table:
    _pyarrow(p)
    import pyarrow.parquet as pq

    try:
        return _arrow(p, pq.read_table(p))
    except Exception as exc:  # pyarrow's errors name no row; say which file
        raise DataFileError(f"{p}: not a readable Parquet file ({exc})") from None


def _hf(p: Path) -> Table:
    """A dataset saved by ``datasets.Dataset.save_to_disk``: its Arrow stream files, in the
    order ``state.json`` lists them (read with pyarrow; ``datasets`` itself is not needed)."""
    pa = _pyarrow(p)
    state = p / "state.json"
    if state.is_file():
        files = [p / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    else:
        files = sorted(p.glob("data-*.arrow"))
    if not files:
        raise DataFileError(
            f"{p}: no Arrow files; a saved dataset is one split (save the split, e.g. "
            "dataset['train'].save_to_disk(path)), not a DatasetDict"
        )
    parts = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as src:
                parts.append(pa.ipc.open_stream(src).read_all())
        except Exception as exc:
            raise DataFileError(
                f"{f}: not an Arrow stream written by save_to_disk ({exc})"
            ) from None
    return _arrow(p, pa.concat_tables(parts))


def _images(p: Path) -> Table:
    """An image folder: one subfolder per class, its images inside (any depth); the rows
    are ``(image path, class)``, opened later by the schema (``fedforge.data.images``)."""
    if not p.is_dir():
        raise DataFileError(f"{p}: an image folder must be a folder of class subfolders")
    rows: list[list[Any]] = []
    for cls in sorted(d for d in p.iterdir() if d.is_dir()):
        files = sorted(f for f in cls.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        rows += [[str(f), cls.name] for f in files]
    stray = [f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise DataFileError(
            f"{p}: images directly in the folder ({stray[0]}, ...); put each in its class's "
            "subfolder"
        )
    return Table(p, ["image", "label"], rows, lambda i: str(rows[i][0]))


def _txt(p: Path) -> Table:
    """A plain-text file as one row of one column, ``text`` (language-model text)."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows: list[list[Any]] = [[text]] if text.strip() else []
    return Table(p, ["text"], rows, lambda i: str(p))
