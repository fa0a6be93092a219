"""Faults during fed.train with real site processes, with and without secure aggregation: a site
dying mid-round, a coordinator killed mid-run and resumed, NaN / wrong-shape / wrong-dtype /
huge-norm updates. Training finishes correctly each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from _fed_train import train as _train
from test_training import _configs, _digits

import dalang as dl
from dalang.federation import protocol as P

pytest.importorskip("sklearn")

SECURE = pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[pa.Table]]:
    root = tmp_path_factory.mktemp("faults")
    return root, _digits(root)


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


@SECURE
def test_a_site_dying_while_it_trains_is_left_out(
    digits: tuple[Path, list[pa.Table]], secure: bool
) -> None:
    configs = _configs(digits[0], s2={"udf_modules": ["_crashing_site"]})
    with dl.Federation.local(configs) as fed:
        result = _train(fed, rounds=4, min_sites=2, secure_aggregation=secure)
        assert fed.processes["s2"].wait(10) == 17
    first, *rest = result.history
    assert first.sites == ["s0", "s1", "s2"] and first.dropped == []
    assert all(r.sites == ["s0", "s1"] and r.dropped == ["s2"] for r in rest)
    assert result.history[-1].metrics["accuracy"] > 0.8


_COORDINATOR = """
import os, signal, sys
import dalang as dl
from dalang import learn
from test_training import COLUMNS, LR

def crash(record):
    if record.round == 3:  # checkpointed: now the coordinator dies without cleaning up
        os.kill(os.getpid(), signal.SIGKILL)

fed = dl.Federation.connect(sys.argv[1].split(","), token=os.environ["TOKEN"],
                            tls_root_certs=sys.argv[2])
fed.train(fed.table("digits"), features=COLUMNS, label="y", trainer=learn.LogisticRegression(),
          strategy=learn.FedAdam(eta=0.05), rounds=6, lr=LR, round_timeout=10.0,
          secure_aggregation=sys.argv[3] == "1", on_round=crash)
"""


@SECURE
def test_a_coordinator_killed_mid_run_resumes_from_its_checkpoint(
    digits: tuple[Path, list[pa.Table]], tmp_path: Path, secure: bool
) -> None:
    from dalang import learn
    from dalang.federation.certs import dev_certificates

    token = P.new_token()
    ca, certs = dev_certificates(tmp_path / "certs", ["s0", "s1", "s2"])
    configs = _configs(digits[0])
    for c in configs:
        name = c["site"]["name"]
        c["site"].update(
            tls_cert=str(certs[name].cert),
            tls_key=str(certs[name].key),
            tokens=[P.token_digest(token)],
        )
    script = tmp_path / "coordinator.py"
    script.write_text(textwrap.dedent(_COORDINATOR))
    with dl.Federation.local(configs, token=token, tls_root_certs=ca.cert) as fed:
        locations = ",".join(fed._transports[s].location for s in fed.sites)
        crashed = subprocess.run(
            [sys.executable, str(script), locations, str(ca.cert), "1" if secure else "0"],
            env={**os.environ, "TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        (run_dir,) = (Path(os.environ["DALANG_HOME"]) / "runs").iterdir()
        kept = json.loads((run_dir / "checkpoint.json").read_text())["history"]
        assert [r["round"] for r in kept] == [1, 2, 3]
        # a new coordinator process (this one) picks the run up where the checkpoint left it
        strategy = learn.FedAdam(eta=0.05)
        resumed = _train(
            fed, rounds=6, strategy=strategy, resume=run_dir.name, secure_aggregation=secure
        )
        straight = _train(
            fed, rounds=6, strategy=learn.FedAdam(eta=0.05), secure_aggregation=secure
        )
    assert [r.round for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert [r.sites for r in resumed.history] == [["s0", "s1", "s2"]] * 6
    assert resumed.history[-1].metrics["accuracy"] > 0.75
    # FedAdam's moments m and v were checkpointed with the weights: the resumed run is the
    # uninterrupted one (the same float operations in the same order, so to rounding)
    final = [r.history[-1].metrics["accuracy"] for r in (resumed, straight)]
    assert final[0] == pytest.approx(final[1], abs=1e-12)
    for a, b in zip(resumed.model.weights, straight.model.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["nan", "shape", "dtype", "norm"])
def test_a_bad_update_is_refused_and_training_finishes(
    digits: tuple[Path, list[pa.Table]], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("DALANG_TEST_BAD_UPDATE", mode)
    configs = _configs(digits[0], s1={"udf_modules": ["_bad_update_site"]})
    with dl.Federation.local(configs) as fed:
        result = _train(fed, rounds=3)
    assert all(r.refused == ["s1"] and r.sites == ["s0", "s2"] for r in result.history)
    assert all(np.all(np.isfinite(w)) for w in result.model.weights)
    assert result.history[-1].metrics["accuracy"] > 0.8
    audit = Path(os.environ["DALANG_HOME"]) / "runs" / result.run_id / "audit.jsonl"
    reasons = [json.loads(line)["reason"] for line in audit.read_text().splitlines()]
    expected = {"nan": "NaN", "shape": "shape", "dtype": "dtype", "norm": "norm"}[mode]
    assert len(reasons) == 3 and all(expected in r for r in reasons)


@pytest.mark.parametrize("mode", ["nan", "shape", "dtype"])
def test_under_secure_aggregation_a_bad_update_never_leaves_its_site(
    digits: tuple[Path, list[pa.Table]], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("DALANG_TEST_BAD_UPDATE", mode)
    configs = _configs(digits[0], s1={"udf_modules": ["_bad_update_site"]})
    with dl.Federation.local(configs) as fed:
        result = _train(fed, rounds=3, secure_aggregation=True)
        assert fed.processes["s1"].poll() is None  # it refused to send, it did not crash
    # the site's own check stops it before masking; its masks come off with its key shares
    assert all(r.sites == ["s0", "s2"] and r.dropped == ["s1"] for r in result.history)
    assert result.history[-1].metrics["accuracy"] > 0.8


def test_under_secure_aggregation_a_huge_update_is_clipped_at_its_site(
    digits: tuple[Path, list[pa.Table]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DALANG_TEST_BAD_UPDATE", "norm")
    configs = _configs(digits[0], s1={"udf_modules": ["_bad_update_site"]})
    bound = 2.0
    with dl.Federation.local(configs) as fed:
        start = _train(fed, rounds=1, lr=0.0).model.weights
        result = _train(fed, rounds=1, secure_aggregation=True, norm_bound=bound)
    step = [a.astype(np.float64) - b for a, b in zip(result.model.weights, start, strict=True)]
    norm = float(np.sqrt(sum(np.sum(d**2) for d in step)))
    # a weighted mean of three updates, each clipped to the bound by its own site
    assert result.history[0].sites == ["s0", "s1", "s2"]
    assert 0.1 < norm <= bound + 1e-6
