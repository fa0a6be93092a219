"""``dalang ui`` as a user starts it: the demo, the token it prints, the extra it needs."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dalang.demo_federated import site_configs
from dalang.federation import protocol as P
from dalang.federation.certs import dev_certificates
from dalang.federation.config import write_config
from dalang.federation.site import launch, stop

pytestmark = pytest.mark.xdist_group("ui")


def test_import_dalang_stays_light() -> None:
    code = (
        "import sys, dalang\nprint(sorted({'fastapi', 'uvicorn', 'starlette'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from dalang.cli import app; app(['ui', '--demo'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert "pip install 'dalang[ui]'" in out.stderr


def test_needs_exactly_one_way_to_the_sites() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dalang.cli", "ui", "--port", "0"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "--sites" in out.stderr and "--connect" in out.stderr and "--demo" in out.stderr


class Dashboard:
    """``dalang ui ...`` as a subprocess; ``url`` once it printed that it is ready."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dalang.cli", "ui", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 90
        while not any(line.startswith("DALANG_UI_READY") for line in self.lines):
            assert self.process.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.1)
        self.url = self.printed("DALANG_UI_READY").split()[1]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def printed(self, prefix: str) -> str:
        return next(line for line in self.lines if line.startswith(prefix))

    def sites(self, token: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.url}/api/sites", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def test_demo_serves_three_sites_behind_a_generated_token() -> None:
    ui = Dashboard("--demo")
    try:
        token = ui.printed("token (generated)").split()[-1]
        assert httpx.get(f"{ui.url}/api/sites").status_code == 401
        assert httpx.post(f"{ui.url}/api/login", json={"token": token + "x"}).status_code == 401
        sites = ui.sites(token)
        assert sorted(s["site"] for s in sites) == ["branch_a", "branch_b", "branch_c"]
        assert all(s["up"] for s in sites)
        assert httpx.get(f"{ui.url}/").status_code == 200  # the page itself holds no data
    finally:
        code = ui.stop()
    assert code == 0, ui.output


@pytest.fixture(scope="module")
def two_site_configs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return site_configs(tmp_path_factory.mktemp("sites"), transactions=500)[:2]


def test_sites_from_toml_files(tmp_path: Path, two_site_configs: list[dict[str, Any]]) -> None:
    paths = [str(write_config(c, tmp_path / f"{c['site']['name']}.toml")) for c in two_site_configs]
    ui = Dashboard("--sites", *paths, "--token", "a-token-of-my-own")
    try:
        assert "generated" not in ui.output
        sites = ui.sites("a-token-of-my-own")
        assert sorted(s["site"] for s in sites) == ["branch_a", "branch_b"]
        assert all(s["up"] for s in sites)
    finally:
        assert ui.stop() == 0, ui.output


@pytest.fixture
def running_sites(
    tmp_path: Path, two_site_configs: list[dict[str, Any]]
) -> Iterator[tuple[list[str], str, Path]]:
    """Two site agents started as a site operator would, with TLS and a token."""
    token = P.new_token()
    names = [c["site"]["name"] for c in two_site_configs]
    ca, certs = dev_certificates(tmp_path / "certs", names)
    processes, locations = [], []
    try:
        for config, name in zip(two_site_configs, names, strict=True):
            site = {
                **config["site"],
                "tls_cert": str(certs[name].cert),
                "tls_key": str(certs[name].key),
                "tokens": [P.token_digest(token)],
                "audit_log": str(tmp_path / f"{name}.audit.jsonl"),
                "budget_db": str(tmp_path / f"{name}.budget.sqlite"),
            }
            path = write_config({**config, "site": site}, tmp_path / f"{name}.toml")
            process, location = launch(path)
            processes.append(process)
            locations.append(location)
        yield locations, token, ca.cert
    finally:
        for process in processes:
            stop(process)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_to_running_sites(running_sites: tuple[list[str], str, Path]) -> None:
    locations, token, ca = running_sites
    nowhere = f"grpc+tls://127.0.0.1:{_unused_port()}"  # a site that is down at start
    ui = Dashboard(
        "--connect", *locations, nowhere, "--site-token", token, "--tls-root-certs", str(ca)
    )
    try:
        page_token = ui.printed("token (generated)").split()[-1]
        assert page_token != token  # the page's token is not the sites' token
        sites = {s["site"]: s for s in ui.sites(page_token)}
        assert sorted(sites) == sorted(["branch_a", "branch_b", nowhere])
        assert sites["branch_a"]["up"] and sites["branch_b"]["up"]
        assert not sites[nowhere]["up"]
        assert sorted(s["location"] for s in sites.values() if s["up"]) == sorted(locations)
        wrong = httpx.get(f"{ui.url}/api/sites", headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 401
    finally:
        assert ui.stop() == 0, ui.output
