"""DuckDB keeps the SQL of a fragment that reads only Parquet: run again, it still reads the
files as they are, and a fragment with inputs handed in is compiled for each run."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dalang.plan.exprs import Agg, Alias, Column
from dalang.plan.nodes import Aggregate, Scan, StageInput
from dalang.platforms.duckdb import DuckDBPlatform
from dalang.sources.files import ParquetSource


def _total(node_input: Scan | StageInput) -> Aggregate:
    return Aggregate(node_input, (), (Alias(Agg("sum", Column("v")), "s"),))


def test_a_kept_fragment_reads_the_file_as_it_is_now(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": [1, 2, 3]}), path)
    fragment = _total(Scan(ParquetSource(str(path))))
    duck = DuckDBPlatform()
    try:
        assert duck.run(fragment, {}).column("s").to_pylist() == [6]
        assert duck.run(fragment, {}).column("s").to_pylist() == [6]
        pq.write_table(pa.table({"v": [10, 20, 30, 40]}), path)
        assert duck.run(fragment, {}).column("s").to_pylist() == [100]
    finally:
        duck.close()


def test_a_fragment_with_inputs_runs_on_each_run_s_inputs() -> None:
    fragment = _total(StageInput("part", pa.schema([("v", pa.int64())])))
    duck = DuckDBPlatform()
    try:
        for values in ([1, 2], [5, 5, 5], [7]):
            out = duck.run(fragment, {"part": pa.table({"v": values})})
            assert out.column("s").to_pylist() == [sum(values)]
    finally:
        duck.close()
