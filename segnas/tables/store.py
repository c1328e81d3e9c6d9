"""A benchmark table on disk: ``table.json`` (what was tabulated: the space, its settings, the
reference costs, the fidelity) and ``table.csv`` (one row per architecture: hash, genes,
genotype, scores, costs, seconds spent), appended in chunks so that a crash loses at most the
chunk in flight and ``resume=true`` continues where the table stopped.

Nested fields (genes, genotype) are JSON in their cells, so the file reads in any CSV tool and
back here without loss.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segnas.errors import ConfigError
from segnas.report.run_dir import write_atomic, write_json

META, ROWS = "table.json", "table.csv"
#: Cells written as JSON (lists and dicts); cells always read back as text (a hash such as
#: ``30e512`` or ``000123`` is not a number); the other cells are numbers, booleans or text.
JSON_FIELDS = ("genes", "genotype")
TEXT_FIELDS = ("genotype_hash", "status")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    return str(value)


def _parse(key: str, text: str) -> Any:
    if text == "":
        return None
    if key in JSON_FIELDS:
        return json.loads(text)
    if key in TEXT_FIELDS:
        return text
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class TableWriter:
    """Appends rows to ``<folder>/table.csv``, one ``fsync`` per :meth:`append`. An existing file
    is continued: its complete rows are kept (a torn last line from a crash is dropped)."""

    def __init__(self, folder: Path, columns: Sequence[str]) -> None:
        self.path = Path(folder) / ROWS
        self.columns = list(columns)
        self.rows = read_rows(self.path) if self.path.is_file() else []
        if self.path.is_file():
            header = self.path.read_text().splitlines()[:1]
            if header and header[0].split(",") != self.columns:
                raise ConfigError(
                    f"{self.path}: its columns {header[0]} are not this table's "
                    f"({','.join(self.columns)}); tabulate into a new hydra.run.dir"
                )
        _rewrite(self.path, self.columns, self.rows)  # drops a torn last line, keeps every complete row

    def done(self) -> set[str]:
        return {str(row["genotype_hash"]) for row in self.rows}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for row in rows:
                writer.writerow([_cell(key, row.get(key)) for key in self.columns])
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.extend(rows)


def _rewrite(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(key, row.get(key)) for key in columns])
    write_atomic(path, buffer.getvalue())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a ``table.csv``; a last row cut short by a crash is left out."""
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for cells in reader:
            if len(cells) != len(header):
                break  # a torn line can only be the last one: appends are whole rows
            try:
                rows.append({key: _parse(key, text) for key, text in zip(header, cells)})
            except json.JSONDecodeError:
                break
        return rows


def write_meta(folder: Path, meta: dict[str, Any]) -> Path:
    """``table.json``; a resumed table must describe the same space (same settings and supernet)."""
    path = Path(folder) / META
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ("searcher", "space", "full", "settings", "supernet", "data")
        changed = [key for key in keys if old.get(key) != meta.get(key)]
        if changed:
            raise ConfigError(
                f"{path}: this run would tabulate another space ({', '.join(changed)} differ); "
                "tabulate into a new hydra.run.dir"
            )
    return write_json(path, meta)


def read(folder: Path | str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``table.json``, rows of ``table.csv``) of a ``task=tabulate`` run directory."""
    folder = Path(str(folder))
    meta_path, rows_path = folder / META, folder / ROWS
    for path in (meta_path, rows_path):
        if not path.is_file():
            raise ConfigError(f"replay.table={folder}: no {path.name} there (expected a task=tabulate run directory)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{meta_path}: not JSON ({err})") from err
    rows = read_rows(rows_path)
    if not rows:
        raise ConfigError(f"{rows_path}: holds no architecture")
    return meta, rows


def search_run(given: Any) -> tuple[Path, dict[str, Any]]:
    """(folder, its ``searcher`` config) of ``tabulate.from_run``: a finished ``task=search`` run
    directory, which must hold search.csv and config.yaml."""
    import yaml

    folder = Path(str(given))
    config = folder / "config.yaml"
    if not (folder / "search.csv").is_file() or not config.is_file():
        raise ConfigError(
            f"tabulate.from_run={given}: expected a task=search run directory with search.csv and config.yaml"
        )
    return folder, (yaml.safe_load(config.read_text()) or {}).get("searcher", {})
