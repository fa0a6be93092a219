"""Plans survive a round trip through JSON; functions travel as references."""

from __future__ import annotations

import datetime
import decimal
import json

import pyarrow as pa
import pytest

from dalang.errors import PlanError
from dalang.plan.exprs import Agg, Alias, Call, Case, Cast, Column, InList, Literal
from dalang.plan.nodes import (
    Aggregate,
    Filter,
    Join,
    Limit,
    MapRows,
    Project,
    Scan,
    Sort,
    Udf,
    UdfChain,
    UdfStep,
)
from dalang.plan.serde import plan_from_json, plan_to_json
from dalang.sources.files import ParquetSource
from dalang.sources.memory import ArrowSource


def shout(row: dict[str, object]) -> dict[str, object]:
    return {k: str(v).upper() for k, v in row.items()}


@pytest.fixture
def parquet(tmp_path):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "a": [1, 2],
                "d": [datetime.date(2020, 1, 1)] * 2,
                "m": pa.array([decimal.Decimal("1.50")] * 2, pa.decimal128(15, 2)),
            }
        ),
        path,
    )
    return str(path)


def test_relational_plan_round_trips(parquet: str) -> None:
    scan = Scan(ParquetSource(parquet), ("a", "d", "m"), Call("gt", (Column("a"), Literal(0))))
    plan = Limit(
        Sort(
            Aggregate(
                Project(
                    Filter(scan, InList(Column("a"), (1, 2, 3))),
                    (
                        Column("a"),
                        Alias(Cast(Column("m"), pa.float64()), "mf"),
                        Alias(
                            Case(
                                (
                                    (
                                        Call(
                                            "le", (Column("d"), Literal(datetime.date(2020, 6, 1)))
                                        ),
                                        Literal("early"),
                                    ),
                                ),
                                Literal(None),
                            ),
                            "when",
                        ),
                        Alias(Call("mul", (Column("m"), Literal(decimal.Decimal("2.5")))), "twice"),
                    ),
                ),
                ("when",),
                (Alias(Agg("sum", Column("mf")), "s"), Alias(Agg("count_all", None), "n")),
            ),
            ("s",),
            (True,),
        ),
        5,
    )
    text = plan_to_json(plan)
    json.loads(text)  # valid JSON
    assert plan_from_json(text) == plan
    assert plan_from_json(text).schema == plan.schema


def test_in_memory_sources_travel_by_name() -> None:
    src = ArrowSource(pa.table({"k": [1]}), "mem")
    plan = Join(Scan(src), Scan(src), "inner", ("k",), ("k",))
    text = plan_to_json(plan)
    assert "pyarrow" not in text
    with pytest.raises(PlanError, match="mem"):
        plan_from_json(text)
    assert plan_from_json(text, tables={"mem": src}) == plan


def test_functions_travel_as_references_not_code() -> None:
    src = ArrowSource(pa.table({"k": [1]}), "mem")
    plan = MapRows(Scan(src), Udf(shout))
    text = plan_to_json(plan)
    assert "test_serde:shout" in text and "sha256:" in text and "upper" not in text
    assert plan_from_json(text, tables={"mem": src}) == plan


def test_lambdas_need_to_be_supplied() -> None:
    src = ArrowSource(pa.table({"k": [1]}), "mem")
    fn = lambda w: (w, 1)  # noqa: E731
    plan = UdfChain(Scan(src), (UdfStep("flat_map", Udf(str.split)), UdfStep("map", Udf(fn))))
    text = plan_to_json(plan)
    with pytest.raises(PlanError, match="not importable"):
        plan_from_json(text, tables={"mem": src})
    ref = Udf(fn).ref
    back = plan_from_json(text, tables={"mem": src}, udfs={ref: fn})
    assert back == plan


def test_not_a_plan_is_refused() -> None:
    with pytest.raises(PlanError):
        plan_from_json('{"something": 1}')
