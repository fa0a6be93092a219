"""The Flower interop's parts without site processes: wire, data hand-over, grid logic, imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import _flower_app as app
import numpy as np
import pyarrow as pa
import pytest
from _flower_runtime import run_flower_simulation
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.run import Run

from dalang.errors import FlowerAppError, InvalidPlan, PlanError
from dalang.flower import DATA_KEY, DalangGrid, site_data
from dalang.flower import wire as W
from dalang.flower.apps import client_app_ref, split_ref
from dalang.flower.data import column_array, table_record
from dalang.flower.grid import InMemoryChannel, SiteNode
from dalang.flower.run import call_server_app


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_import_dalang_does_not_import_flwr() -> None:
    done = _python("import sys, dalang; print('flwr' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_flwr_the_interop_says_what_to_install() -> None:
    done = _python(
        "import sys; sys.modules['flwr'] = None\n"
        "import dalang as dl\n"
        "try:\n"
        "    dl.Federation.run_flower(None, None, server_app=None, client_app=None)\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "PlatformUnavailable the flower platform needs: pip install 'dalang[flower]'"
    )


def test_a_message_crosses_the_wire_in_pieces_and_comes_back_equal() -> None:
    _grid()  # a grid gives this process the ServerApp's identity, which new Messages carry
    arrays = ArrayRecord([np.arange(12.0).reshape(3, 4), np.ones(3, dtype=np.float32)])
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"lr": 0.1, "tag": "x"})})
    message = Message(content, 7, "train", group_id="2")
    message.metadata.__dict__["_message_id"] = "m1"
    parts = W.message_to_parts(message)
    assert [len(p) for p in parts[1:]] == [a.data.__len__() for a in arrays.values()]
    assert len(parts[0]) < 400  # the arrays' data is not in the protobuf
    schema, batches = W.parts_to_batches(parts, doc={"a": 1}, max_piece_bytes=64)
    assert len(batches) == sum(-(-len(p) // 64) for p in parts)
    back = W.message_from_parts(W.parts_from_batches(schema, batches))
    assert W.doc_from_schema(schema) == {"a": 1}
    assert back.metadata.dst_node_id == 7 and back.metadata.group_id == "2"
    assert back.metadata.message_id == "m1"
    got = back.content["arrays"].to_numpy_ndarrays()
    assert [g.dtype for g in got] == [np.float64, np.float32]
    np.testing.assert_array_equal(got[0], np.arange(12.0).reshape(3, 4))
    assert dict(back.content["config"]) == {"lr": 0.1, "tag": "x"}


def test_parts_that_are_not_a_message_are_refused() -> None:
    with pytest.raises(InvalidPlan, match="does not decode"):
        W.message_from_parts([b"\xff\x00 not a protobuf"])
    _grid()
    message = Message(RecordDict({"a": ArrayRecord([np.zeros(2)])}), 7, "train")
    parts = W.message_to_parts(message)
    with pytest.raises(InvalidPlan, match="lacks array data"):
        W.message_from_parts(parts[:1])
    with pytest.raises(InvalidPlan, match="more array data"):
        W.message_from_parts([*parts, b"x"])
    schema, batches = W.parts_to_batches(parts)
    with pytest.raises(InvalidPlan, match="ends early"):
        W.parts_from_batches(schema, batches[:1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": "run"}, "unknown Flower step"),
        ({"plan": 3}, "'plan'"),
        ({"node_id": -1}, "'node_id'"),
        ({"run_id": True}, "'run_id'"),
        ({"run_config": {"x": [1]}}, "'run_config'"),
    ],
)
def test_malformed_requests_are_refused(change: dict[str, Any], message: str) -> None:
    good = W.FlowerRequest("message", "{}", "m:a", "sha256:00", 1, 2, {}, {}).to_json()
    assert W.FlowerRequest.from_json(good).node_id == 2
    with pytest.raises(InvalidPlan, match=message):
        W.FlowerRequest.from_json({**good, **change})


def test_site_data_hands_columns_over_as_numpy_arrays() -> None:
    table = pa.table(
        {
            "f": [1.5, None],
            "i": pa.array([1, None], pa.int64()),
            "n": [1, 2],
            "b": [True, False],
            "s": ["ab", None],
            "d": pa.array(["x", "y"]).dictionary_encode(),
        }
    )
    context = Context(1, 2, {}, RecordDict(), {})
    context.state[DATA_KEY] = table_record(table)
    data = site_data(context)
    assert list(data) == ["f", "i", "n", "b", "s", "d"]
    assert np.isnan(data["f"][1]) and np.isnan(data["i"][1]) and data["i"][0] == 1.0
    assert data["n"].dtype == np.int64 and data["b"].dtype == np.bool_
    assert data["s"].tolist() == ["ab", ""] and data["d"].tolist() == ["x", "y"]


def test_nested_columns_and_contexts_without_site_data_get_clear_errors() -> None:
    with pytest.raises(PlanError, match="column 'l' has type list"):
        column_array(pa.table({"l": [[1], [2]]}), "l")
    with pytest.raises(PlanError, match="works inside a ClientApp that a dalang site runs"):
        site_data(Context(1, 2, {}, RecordDict(), {}))


def test_clientapp_references() -> None:
    assert client_app_ref(app.client_app) == "_flower_app:client_app"
    assert client_app_ref(app.client_fn) == "_flower_app:client_fn"
    assert split_ref("a.b:c") == ("a.b", "c")
    for bad in ("nomodule", "a:", "a b:c", "a:c.d", ":c"):
        with pytest.raises(PlanError, match="must look like"):
            split_ref(bad)


def _grid(**kw: Any) -> DalangGrid:
    nodes = {}
    for k in range(3):
        X, y = app.partition(k)
        table = pa.table({**{c: X[:, i] for i, c in enumerate(app.FEATURES)}, app.LABEL: y})
        channel = InMemoryChannel(app.client_app, table, site=f"s{k}")
        nodes[100 + k] = SiteNode(f"s{k}", 100 + k, channel, {"partition-id": k})
    return DalangGrid(nodes, run=Run.create_empty(5), client_app="_flower_app:client_app", **kw)


def test_the_grid_on_in_memory_sites_matches_flowers_runtime() -> None:
    run_flower_simulation(app.make_server_app(), app.client_app, num_supernodes=3)
    expected = app.RESULTS["fedavg"].arrays.to_numpy_ndarrays()
    grid = _grid()
    result = call_server_app(app.make_server_app(), grid, Context(5, 1, {}, RecordDict(), {}))
    for got, want in zip(result.arrays.to_numpy_ndarrays(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert [r.round for r in grid.rounds()] == ["1", "2", "3"]


def test_the_grid_refuses_unknown_nodes_and_calls_after_close() -> None:
    grid = _grid()
    message = Message(RecordDict({"x": ArrayRecord({"a": Array(np.zeros(1))})}), 999, "train")
    with pytest.raises(FlowerAppError, match="node 999, which is not in this run"):
        grid.push_messages([message])
    grid.close("stopped by the test")
    with pytest.raises(FlowerAppError, match="stopped by the test"):
        grid.get_node_ids()
    with pytest.raises(ValueError, match="on_client_error"):
        _grid(on_client_error="ignore")


def test_the_public_surface_of_dalang_flower() -> None:
    import dalang.flower

    assert sorted(dalang.flower.__all__) == [
        "DATA_KEY",
        "DalangGrid",
        "FlowerResult",
        "FlowerRound",
        "SITE_KEY",
        "client_app_digest",
        "run_flower",
        "site_data",
    ]


def test_run_flower_checks_its_arguments_before_any_site_is_asked() -> None:
    import dalang as dl
    from dalang.federation.transport import InMemoryTransport

    table = pa.table({"x0": [1.0], "label": [0]})
    transport = InMemoryTransport("a", {"points": (table, {"egress": "none"})})
    with dl.Federation([transport]) as fed:
        data = fed.table("points")
        server_app = app.make_server_app()
        bad: list[tuple[dict[str, Any], str]] = [
            ({"server_app": object()}, "server_app must be a flwr ServerApp"),
            ({"rounds": 0}, "rounds must be a positive integer"),
            ({"rounds": True}, "rounds must be a positive integer"),
            ({"on_client_error": "ignore"}, "on_client_error must be 'raise' or 'reply'"),
            ({"run_config": {"x": [1]}}, "run_config values must be"),
            ({"timeout": 0}, "must be positive seconds"),
            ({}, "is not reached over Arrow Flight"),
        ]
        for change, message in bad:
            kw: dict[str, Any] = {"server_app": server_app, "client_app": app.client_app}
            with pytest.raises(PlanError, match=message):
                fed.run_flower(data, **{**kw, **change})
        assert transport.calls == 2  # health and datasets when it connected: nothing since


def test_the_cli_prints_the_digest_a_site_operator_approves() -> None:
    from _sites import HERE

    from dalang.flower import client_app_digest

    done = subprocess.run(
        [sys.executable, "-m", "dalang.cli", "site", "flower-digest", "_flower_app:client_app",
         "--path", str(HERE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    digest = client_app_digest(app.client_app)
    assert done.stdout.splitlines() == [digest, f'trainers = ["flower", "{digest}"]']
    missing = subprocess.run(
        [sys.executable, "-m", "dalang.cli", "site", "flower-digest", "no_such_module:app"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "cannot import the ClientApp's module" in missing.stderr
