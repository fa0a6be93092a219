"""The one check that Flower is installed, with what to install when it is not."""

from __future__ import annotations

from dalang.errors import PlatformUnavailable

#: The Flower release the interop is written and tested against (the ``flower`` extra).
FLOWER_VERSION = "1.41.0"


def require_flwr() -> None:
    """Raise PlatformUnavailable (``pip install 'dalang[flower]'``) when flwr is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError as e:
        raise PlatformUnavailable("flower", "flower") from e
