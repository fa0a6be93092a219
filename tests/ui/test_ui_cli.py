"""``dalang ui`` as a user starts it: the demo, the token it prints, the extra it needs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

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


def test_demo_serves_three_sites_behind_a_generated_token() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dalang.cli", "ui", "--demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("DALANG_UI_READY") for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        url = next(line.split()[1] for line in lines if line.startswith("DALANG_UI_READY"))
        token = next(line.split()[-1] for line in lines if line.startswith("token (generated)"))
        assert httpx.get(f"{url}/api/sites").status_code == 401
        assert httpx.post(f"{url}/api/login", json={"token": token + "x"}).status_code == 401
        sites = httpx.get(
            f"{url}/api/sites", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()
        assert sorted(s["site"] for s in sites) == ["branch_a", "branch_b", "branch_c"]
        assert all(s["up"] for s in sites)
        assert httpx.get(f"{url}/").status_code == 200  # the page itself holds no data
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    assert code == 0, "".join(lines)
