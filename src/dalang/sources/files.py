"""File sources: Parquet, CSV, JSON lines and plain text, read with pyarrow."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from dalang.errors import MalformedInput, SourceError, SourceNotFound
from dalang.plan.exprs import Cast, Column, ExprNode, columns_used
from dalang.plan.nodes import values_schema
from dalang.sources.base import Source, normalise_schema, normalise_type

#: Bytes read from the start of a text-like file to estimate its row count.
_SAMPLE_BYTES = 1 << 16


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise SourceNotFound(path)


def file_stamp(path: str) -> tuple[int, int] | None:
    """Modification time and size of ``path`` (None when it cannot be read yet)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _arrow_filter(predicate: ExprNode | None) -> Any:
    if predicate is None:
        return None
    from dalang.platforms.arrow_exprs import to_arrow_expr

    return to_arrow_expr(predicate)


def _rows_per_byte(path: str) -> float:
    with open(path, "rb") as f:
        sample = f.read(_SAMPLE_BYTES)
    return max(sample.count(b"\n"), 1) / max(len(sample), 1)


@dataclass(frozen=True, eq=False)
class _FileSource(Source):
    path: str

    def __post_init__(self) -> None:
        # Which version of the file this is: plan caches are process-wide, and a file
        # rewritten with other columns must not be taken for the one read before.
        object.__setattr__(self, "_stamp", file_stamp(self.path))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and self._key == other._key  # type: ignore[attr-defined]
            and self._stamp == other._stamp  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((self._key, self._stamp))  # type: ignore[attr-defined]

    @property
    def _key(self) -> tuple[Any, ...]:
        return (self.path,)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def estimate_bytes(self) -> float:
        return float(os.path.getsize(self.path))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True, eq=False)
class ParquetSource(_FileSource):
    """A Parquet file (or a directory of them); statistics come from the footers."""

    kind = "parquet"

    @cached_property
    def _dataset(self) -> Any:
        import pyarrow.dataset as ds  # imports pandas when present: keep it off `import dalang`

        _check_path(self.path)
        try:
            return ds.dataset(self.path, format="parquet")
        except pa.ArrowInvalid as e:
            raise SourceError(f"{self.path!r} is not a readable Parquet file: {e}") from e

    @cached_property
    def _view_columns(self) -> frozenset[str]:
        """Columns stored as string_view/large_string, which dalang reads as string."""
        physical = self._dataset.schema
        return frozenset(f.name for f in physical if normalise_type(f.type) != f.type)

    @property
    def files(self) -> list[str]:
        return list(self._dataset.files)

    @cached_property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        return normalise_schema(self._dataset.schema)

    @cached_property
    def _metadata(self) -> list[pq.FileMetaData]:
        return [pq.ParquetFile(f).metadata for f in self.files]

    def estimate_rows(self) -> float:
        return float(sum(m.num_rows for m in self._metadata))

    def estimate_bytes(self) -> float:
        total = 0
        for m in self._metadata:
            for i in range(m.num_row_groups):
                total += m.row_group(i).total_byte_size
        return float(total)

    def column_bytes(self, columns: tuple[str, ...]) -> float:
        """Uncompressed bytes of some columns, from the footers."""
        wanted = set(columns)
        total = 0
        for m in self._metadata:
            for i in range(m.num_row_groups):
                rg = m.row_group(i)
                for j in range(rg.num_columns):
                    col = rg.column(j)
                    if col.path_in_schema.split(".")[0] in wanted:
                        total += col.total_uncompressed_size
        return float(total)

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        if not self._view_columns:
            # dataset scanning prunes row groups by their statistics and reads only `columns`
            return self._dataset.to_table(
                columns=list(columns) if columns is not None else None,
                filter=_arrow_filter(predicate),
            )
        return self._read_views(columns, predicate)

    def _read_views(self, columns: tuple[str, ...] | None, predicate: ExprNode | None) -> pa.Table:
        """Read files with string_view columns, which Arrow's scanner cannot filter.

        Row groups are still pruned by their statistics; rows are filtered after the
        view columns are cast to plain strings.
        """
        needed = None
        if columns is not None:
            extra = columns_used(predicate) - set(columns) if predicate is not None else set()
            needed = list(columns) + sorted(extra)
        pieces: list[pa.Table] = []
        prune = _arrow_filter(self._physical(predicate))
        for fragment in self._dataset.get_fragments():
            groups = fragment.split_by_row_group(prune) if prune is not None else [fragment]
            pieces.extend(g.to_table(columns=needed) for g in groups)
        if pieces:
            table = pa.concat_tables(pieces)
        else:
            physical = self._dataset.schema
            empty = physical.empty_table()
            table = empty if needed is None else empty.select(needed)
        table = self._canonical(table)
        if predicate is not None:
            table = table.filter(_arrow_filter(predicate))
        return table.select(list(columns)) if columns is not None else table

    def read_batches(self, columns=None, predicate=None):  # type: ignore[no-untyped-def]
        if self._view_columns:
            yield from self._read_views(columns, predicate).to_batches()
            return
        yield from self._dataset.to_batches(
            columns=list(columns) if columns is not None else None,
            filter=_arrow_filter(predicate),
        )

    def _physical(self, predicate: ExprNode | None) -> ExprNode | None:
        """The predicate over the stored types: view columns compared as plain strings."""
        if predicate is None or not self._view_columns:
            return predicate
        from dalang.optimizer.rules import rename_columns

        used = columns_used(predicate) & self._view_columns
        return rename_columns(predicate, {n: Cast(Column(n), pa.string()) for n in used})

    def _canonical(self, table: pa.Table) -> pa.Table:
        if not self._view_columns:
            return table
        return table.cast(normalise_schema(table.schema))


@dataclass(frozen=True, eq=False)
class CsvSource(_FileSource):
    """A CSV file with a header row."""

    delimiter: str = ","
    header: bool = True
    kind = "csv"

    @property
    def _key(self) -> tuple[Any, ...]:
        return (self.path, self.delimiter, self.header)

    def _options(self) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions]:
        read = pacsv.ReadOptions(autogenerate_column_names=not self.header)
        parse = pacsv.ParseOptions(delimiter=self.delimiter)
        return read, parse

    @cached_property
    def schema(self) -> pa.Schema:  # type: ignore[override]
        _check_path(self.path)
        read, parse = self._options()
        try:
            with pacsv.open_csv(self.path, read_options=read, parse_options=parse) as reader:
                return reader.schema
        except pa.ArrowInvalid as e:
            raise _malformed(e, self.path, self.delimiter) from e

    def estimate_rows(self) -> float:
        return self.estimate_bytes() * _rows_per_byte(self.path)

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        _check_path(self.path)
        read, parse = self._options()
        wanted = None
        if columns is not None:
            # the predicate may read columns that are not returned
            extra = sorted(columns_used(predicate) - set(columns)) if predicate is not None else []
            wanted = list(columns) + extra
        convert = pacsv.ConvertOptions(include_columns=wanted, column_types=self.schema)
        try:
            table = pacsv.read_csv(
                self.path, read_options=read, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as e:
            raise _malformed(e, self.path, self.delimiter) from e
        if predicate is not None:
            table = table.filter(_arrow_filter(predicate))
        return table.select(list(columns)) if columns is not None else table

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "delimiter": self.delimiter, "header": self.header}


def _malformed(error: Exception, path: str, delimiter: str) -> MalformedInput:
    """A CSV error naming the first line whose field count differs from the header's."""
    import csv

    line = None
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        width = None
        for row in reader:
            if width is None:
                width = len(row)
            elif row and len(row) != width:
                line = reader.line_num
                break
    return MalformedInput(str(error).splitlines()[0], path=path, line=line)


@dataclass(frozen=True, eq=False)
class JsonSource(_FileSource):
    """A JSON lines file: one object per line."""

    kind = "json"

    @cached_property
    def _table(self) -> pa.Table:
        _check_path(self.path)
        try:
            return pajson.read_json(self.path)
        except pa.ArrowInvalid as e:
            raise _malformed_json(e, self.path) from e

    @property
    def schema(self) -> pa.Schema:
        return self._table.schema

    def estimate_rows(self) -> float:
        return float(self._table.num_rows)

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        table = self._table
        if predicate is not None:
            table = table.filter(_arrow_filter(predicate))
        return table.select(list(columns)) if columns is not None else table


def _malformed_json(error: Exception, path: str) -> MalformedInput:
    # pyarrow does not say which line; find the first line that json rejects
    import json

    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError as e:
                    return MalformedInput(f"not valid JSON: {e}", path=path, line=number)
    return MalformedInput(str(error).splitlines()[0], path=path)


@dataclass(frozen=True, eq=False)
class TextSource(_FileSource):
    """A text file read as plain values: one string per line, without the line break."""

    kind = "text"

    @property
    def schema(self) -> pa.Schema:
        return values_schema(pa.string())

    def estimate_rows(self) -> float:
        _check_path(self.path)
        return self.estimate_bytes() * _rows_per_byte(self.path)

    def read(
        self, columns: tuple[str, ...] | None = None, predicate: ExprNode | None = None
    ) -> pa.Table:
        _check_path(self.path)
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        table = pa.table({"value": pa.array(lines, pa.string())}, schema=self.schema)
        if predicate is not None:
            table = table.filter(_arrow_filter(predicate))
        return table
