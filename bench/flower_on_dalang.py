"""The same Flower app under Flower's own runtime and on dalang sites: wall time per round.

Run by hand, not in CI::

    python bench/flower_on_dalang.py                  # 10 rounds, small and 4M-parameter models
    python bench/flower_on_dalang.py --rounds 5 --padding 0

The app (``bench/_flower_bench_app.py``, Flower's quickstart style, FedAvg over three
nodes, NumPy softmax regression on digits) runs unchanged

* under **Flower's Simulation Runtime** (``flwr.simulation.run_simulation``: its
  InMemoryGrid, LinkState and engine workers) twice: with the engine's Ray backend
  swapped for one that calls the ClientApp in-process (Ray is not in dalang's
  dependencies), and on Ray itself as Flower users run it, when ``ray`` is installed,
* under **Flower's Deployment Runtime** (``flower-superlink`` and three
  ``flower-supernode`` processes on loopback, the app submitted with ``flwr run``; small
  model only, fewer rounds, since every round takes seconds there), and
* on **three dalang site processes** over loopback with TLS (``fed.run_flower``: each
  message one Flight exchange, policy checks and audit at the site, the data from a site
  pipeline).

A round is timed inside the ServerApp (Flower's ``evaluate_fn`` hook marks its end), so
every runtime is measured the same way; start-up (processes, or the simulation) is
reported apart. The final weights of the two runs are compared. Results go to
``bench/results/flower_on_dalang.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np
from _common import BENCH_DIR, ROOT, fmt_ratio, fmt_seconds, machine_info, write_json
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(ROOT / "tests" / "flower"))  # Flower's runtime without Ray (test helper)

import _flower_bench_app as app


def flower_runtime(rounds: int, padding: int) -> dict[str, Any]:
    from _flower_runtime import run_flower_simulation

    out: dict[str, Any] = {}
    started = time.perf_counter()
    run_flower_simulation(
        app.make_server_app(rounds=rounds, padding=padding, out=out),
        app.client_app,
        num_supernodes=3,
    )
    out["total_seconds"] = time.perf_counter() - started
    out["startup_seconds"] = out["total_seconds"] - sum(out["round_seconds"])
    return out


_SERVER_MODULE = """
import json
from pathlib import Path

import _flower_bench_app as A
from flwr.serverapp import ServerApp

app = ServerApp()


@app.main()
def main(grid, context):
    out = {}
    config = context.run_config
    inner = A.make_server_app(
        rounds=int(config["num-server-rounds"]), padding=int(config["padding"]), out=out
    )
    inner._main(grid, context)
    out["arrays"] = [a.tolist() for a in out["arrays"]]
    Path(str(config["out"])).write_text(json.dumps(out))
"""

_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flowerbench"
version = "1.0.0"
description = "the bench app"
license = "Apache-2.0"
dependencies = ["flwr==1.41.0", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "dalang"

[tool.flwr.app.components]
serverapp = "flowerbench_server:app"
clientapp = "_flower_bench_app:client_app"

[tool.flwr.app.config]
num-server-rounds = 3
padding = 0
out = "out.json"
"""


def flower_ray(rounds: int, padding: int) -> dict[str, Any] | None:
    """Flower's Simulation Runtime as users run it, on Ray (``flwr[simulation]``), if installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return None
    from flwr.simulation import run_simulation

    # Ray's workers import the ClientApp's module: they need this folder on their path
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])
    )
    out: dict[str, Any] = {}
    started = time.perf_counter()
    run_simulation(
        server_app=app.make_server_app(rounds=rounds, padding=padding, out=out),
        client_app=app.client_app,
        num_supernodes=3,
    )
    out["total_seconds"] = time.perf_counter() - started
    out["startup_seconds"] = out["total_seconds"] - sum(out["round_seconds"])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def flower_deployment(rounds: int, padding: int) -> dict[str, Any]:
    """Flower's Deployment Runtime: a SuperLink, three SuperNodes, ``flwr run``."""
    tmp = Path(tempfile.mkdtemp(prefix="flower-deployment-"))
    bin_dir = Path(sys.executable).parent
    port = _free_port()
    home, project = tmp / "home", tmp / "app"
    home.mkdir()
    project.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    shutil.copy(BENCH_DIR / "_flower_bench_app.py", project)
    (project / "flowerbench_server.py").write_text(_SERVER_MODULE)
    (project / "pyproject.toml").write_text(_PYPROJECT)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, log: str) -> None:
        with (tmp / log).open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / args[0]), *args[1:]],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: its helper processes stop with it
                )
            )

    try:
        started = time.perf_counter()
        start("flower-superlink", "--insecure", "--port", str(port),
              "--disable-runtime-dependency-installation", log="superlink.log")  # fmt: skip
        _wait_port(port, 60)
        for k in range(3):
            start("flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{port}",
                  "--port", str(_free_port()), "--node-config",
                  f"partition-id={k} num-partitions=3", log=f"supernode{k}.log")  # fmt: skip
        out_path = tmp / "out.json"
        config = f"num-server-rounds={rounds} padding={padding} out='{out_path}'"
        subprocess.run(
            [str(bin_dir / "flwr"), "run", str(project), "bench", "--stream",
             "--run-config", config],
            env=env, check=True, timeout=600, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        total = time.perf_counter() - started
        out: dict[str, Any] = json.loads(out_path.read_text())
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    out["arrays"] = [np.asarray(a) for a in out["arrays"]]
    out["total_seconds"] = total
    out["startup_seconds"] = total - sum(out["round_seconds"])
    return out


def site_configs(root: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dalang.flower import client_app_digest

    digest = client_app_digest(app.client_app)
    configs = []
    for k, (X, y) in enumerate(app.partitions()):
        path = root / f"site{k}.parquet"
        pq.write_table(
            pa.table({**{c: X[:, i] for i, c in enumerate(app.PIXELS)}, "label": y}), path
        )
        configs.append(
            {
                "site": {"name": f"site{k}", "udf_modules": ["_flower_bench_app"]},
                "datasets": {
                    "digits": {
                        "source": str(path),
                        "policy": {"egress": "none", "trainers": ["flower", digest]},
                    }
                },
            }
        )
    return configs


def dalang_sites(rounds: int, paddings: list[int]) -> list[dict[str, Any]]:
    import dalang as dl

    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")])
    )
    outs = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with dl.Federation.local(site_configs(Path(tmp))) as fed:
            startup = time.perf_counter() - started
            for padding in paddings:
                out: dict[str, Any] = {"startup_seconds": startup}
                began = time.perf_counter()
                result = fed.run_flower(
                    fed.table("digits"),
                    server_app=app.make_server_app(rounds=rounds, padding=padding, out=out),
                    client_app=app.client_app,
                    rounds=rounds,
                )
                out["run_seconds"] = time.perf_counter() - began
                out["total_seconds"] = startup + out["run_seconds"]
                out["history_seconds"] = [r.seconds for r in result.history]
                out["site_seconds"] = [r.site_seconds for r in result.history]
                outs.append(out)
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--padding",
        type=int,
        nargs="*",
        default=[0, 4_000_000],
        help="extra float32 parameters the model carries (0: just the 650 weights)",
    )
    parser.add_argument(
        "--deployment-rounds",
        type=int,
        default=3,
        help="rounds under Flower's Deployment Runtime (small model; 0 skips it)",
    )
    args = parser.parse_args()
    console = Console(width=130)
    cases = []
    deployment = None
    if args.deployment_rounds:
        deployment = flower_deployment(args.deployment_rounds, 0)
        deployment.pop("arrays")
    dalang_runs = dalang_sites(args.rounds, args.padding)
    for padding, on_dalang in zip(args.padding, dalang_runs, strict=True):
        on_flower = flower_runtime(args.rounds, padding)
        dalang_arrays = on_dalang.pop("arrays")
        diff = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(on_flower.pop("arrays"), dalang_arrays, strict=True)
        )
        f_round = statistics.median(on_flower["round_seconds"])
        d_round = statistics.median(on_dalang["round_seconds"])
        cases.append(
            {
                "parameters": 650 + padding,
                "model_mb": (650 * 8 + padding * 4) / 1e6,
                "flower_runtime": on_flower,
                "dalang_sites": on_dalang,
                "median_round_seconds": {"flower_runtime": f_round, "dalang_sites": d_round},
                "dalang_over_flower": d_round / f_round,
                "max_abs_weight_difference": diff,
            }
        )
        on_ray = flower_ray(args.rounds, padding)
        if on_ray is not None:
            cases[-1]["max_abs_weight_difference_ray"] = max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(on_ray.pop("arrays"), dalang_arrays, strict=True)
            )
            cases[-1]["flower_ray"] = on_ray
            cases[-1]["median_round_seconds"]["flower_ray"] = statistics.median(
                on_ray["round_seconds"]
            )
        if padding == 0 and deployment is not None:
            cases[-1]["flower_deployment"] = deployment
            cases[-1]["median_round_seconds"]["flower_deployment"] = statistics.median(
                deployment["round_seconds"]
            )

    title = f"Flower app, {args.rounds} rounds ({args.deployment_rounds} in deployment), 3 nodes"
    table = Table(title=f"{title}: wall time per round")
    for col in (
        "parameters",
        "runtime",
        "median round",
        "first round",
        "start-up",
        "total",
        "accuracy",
    ):
        table.add_column(col, justify="right")
    for case in cases:
        for label, key in (
            ("Flower deployment", "flower_deployment"),
            ("Flower simulation (Ray)", "flower_ray"),
            ("Flower simulation", "flower_runtime"),
            ("dalang sites", "dalang_sites"),
        ):
            if key not in case:
                continue
            run = case[key]
            table.add_row(
                f"{case['parameters']:,} ({case['model_mb']:.1f} MB)",
                label,
                fmt_seconds(statistics.median(run["round_seconds"])),
                fmt_seconds(run["round_seconds"][0]),
                fmt_seconds(run["startup_seconds"]),
                fmt_seconds(run["total_seconds"]),
                f"{run['accuracy']:.3f}",
            )
        table.add_row(
            "", "dalang / Flower simulation", fmt_ratio(case["dalang_over_flower"]), "", "", "",
            f"Δw {case['max_abs_weight_difference']:.1e}",
        )  # fmt: skip
    console.print(table)
    path = write_json(
        "flower_on_dalang",
        {
            "machine": machine_info(),
            "rounds": args.rounds,
            "nodes": 3,
            "flower_runtime": "flwr.simulation.run_simulation, Ray backend swapped for in-process",
            "flower_ray": "flwr.simulation.run_simulation on Ray (when installed), default resources",
            "flower_deployment": "flower-superlink + 3 flower-supernode, flwr run (insecure)",
            "deployment_rounds": args.deployment_rounds,
            "dalang_sites": "fed.run_flower over 3 site processes, Arrow Flight + TLS on loopback",
            "cases": cases,
        },
    )
    console.print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
