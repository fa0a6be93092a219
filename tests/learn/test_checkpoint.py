"""The training checkpoint on disk: what it holds, and that a process dying while it writes
one leaves the previous one whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dalang.learn import rounds
from dalang.learn.rounds import load_checkpoint, save_checkpoint
from dalang.learn.types import RoundRecord


def _save(directory: Path, round: int, **kw: Any) -> None:
    history = [
        RoundRecord(round=r, sites=["a"], metrics={"accuracy": r / 10}) for r in range(1, round + 1)
    ]
    save_checkpoint(
        directory,
        meta={"run_id": "r", "trainer": "logistic_regression"},
        weights=[np.full((2, 2), float(round)), np.arange(3, dtype=np.float32) + round],
        history=history,
        state={"steps": round, "m.0": np.full((2, 2), -float(round)), "site": "a", "lr": 0.5},
    )


def test_a_checkpoint_reads_back_what_was_written(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    saved = load_checkpoint(tmp_path)
    assert saved.format == 2 and saved.meta["run_id"] == "r"
    assert [r.round for r in saved.history] == [1, 2]
    assert saved.weights[1].dtype == np.float32
    np.testing.assert_array_equal(saved.weights[0], np.full((2, 2), 2.0))
    assert saved.state is not None
    assert {k: v for k, v in saved.state.items() if k != "m.0"} == {
        "steps": 2,
        "site": "a",
        "lr": 0.5,
    }
    np.testing.assert_array_equal(saved.state["m.0"], np.full((2, 2), -2.0))  # type: ignore[arg-type]
    # one round's files: the commit file and its two array files, nothing older
    _save(tmp_path, 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[0] == "checkpoint.json", names
    assert all(n.endswith(".npz") and "000003" in n for n in names[1:]), names
    doc = json.loads((tmp_path / "checkpoint.json").read_text())
    assert doc["state"]["values"] == {"steps": 3, "site": "a", "lr": 0.5}


@pytest.mark.parametrize("dies_at", ["weights", "state", "commit"])
def test_a_process_dying_mid_write_leaves_the_last_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_at: str
) -> None:
    _save(tmp_path, 1)
    real = rounds._write_synced

    def dying(path: Path, write: Any) -> None:
        kind = "commit" if path.name.startswith("checkpoint") else path.name.split("-")[0]
        if kind == dies_at:  # half a file written, then the process is gone
            with path.open("wb") as f:
                f.write(b"PK\x03\x04 half")
            raise SystemExit("killed")
        real(path, write)

    monkeypatch.setattr(rounds, "_write_synced", dying)
    with pytest.raises(SystemExit):
        _save(tmp_path, 2)
    saved = load_checkpoint(tmp_path)
    assert [r.round for r in saved.history] == [1]
    np.testing.assert_array_equal(saved.weights[0], np.full((2, 2), 1.0))
    assert saved.state is not None and saved.state["steps"] == 1
    # the next checkpoint written in full cleans up what the dead one left
    monkeypatch.setattr(rounds, "_write_synced", real)
    _save(tmp_path, 2)
    assert [r.round for r in load_checkpoint(tmp_path).history] == [1, 2]
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".npz"]) == 2


def test_state_entries_must_be_arrays_numbers_or_strings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'steps' is a list; state\(\) may hold numpy arrays"):
        save_checkpoint(tmp_path, meta={}, weights=[np.zeros(1)], history=[],
                        state={"steps": [1, 2]})  # type: ignore[dict-item]  # fmt: skip


def test_no_checkpoint_and_an_unknown_format_are_clear_errors(tmp_path: Path) -> None:
    from dalang.errors import PlanError

    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": 9}))
    with pytest.raises(PlanError, match="has format 9; this dalang reads formats 1 and 2"):
        load_checkpoint(tmp_path)
