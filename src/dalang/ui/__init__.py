"""The dashboard (``dalang ui``): a small web app over a coordinator's ``Federation``.

Everything it shows comes through the Federation API, so the sites' policies decide what
a browser can see. FastAPI and uvicorn are an extra: ``pip install 'dalang[ui]'``.
"""

from __future__ import annotations

#: What to install when the extra is missing.
INSTALL_HINT = "the dashboard needs FastAPI and uvicorn: pip install 'dalang[ui]'"


def missing_extra() -> str | None:
    """``None`` when FastAPI and uvicorn import, else the install hint."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None
