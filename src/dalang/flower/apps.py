"""Flower ClientApps as approved user code: ``module:attribute`` references and digests.

A ClientApp travels as a reference, never as code or a pickle. Its digest is the
SHA-256 of the source of the module that defines it, so a site operator approves
exactly the file they read; a site runs it only when the module is one of its
``udf_modules`` (imported at start-up, nothing is imported on request) and every
dataset the data plan reads lists ``"flower"`` and the digest in its ``trainers``.

Examples
--------
>>> client_app_digest("my_flower_app:client_app")  # doctest: +SKIP
'sha256:5f0c...'
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from dalang.errors import PlanError, PolicyViolation
from dalang.federation.config import Policy

#: The name a dataset policy lists (next to the digest) to allow Flower ClientApps.
TRAINER_NAME = "flower"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def module_digest(module: ModuleType) -> str:
    """``sha256:<hex>`` of a module's source."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        raise PlanError(
            f"the source of module {module.__name__!r} cannot be read, so its ClientApp "
            "cannot be approved by digest; define the ClientApp in a .py file"
        ) from None
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


def split_ref(ref: str) -> tuple[str, str]:
    """``("module", "attribute")`` from ``"module:attribute"`` (checked)."""
    module, sep, attr = ref.partition(":")
    parts = module.split(".") if module else []
    if not (sep and parts and attr and all(_IDENT.match(p) for p in [*parts, attr])):
        raise PlanError(
            f"a ClientApp reference must look like 'package.module:attribute', not {ref[:80]!r}"
        )
    return module, attr


def client_app_ref(client_app: Any) -> str:
    """The ``module:attribute`` of a ClientApp (or client_fn) object, or of a reference."""
    if isinstance(client_app, str):
        split_ref(client_app)
        return client_app
    if inspect.isfunction(client_app):
        module = client_app.__module__
        if module != "__main__" and "<locals>" not in client_app.__qualname__:
            return f"{module}:{client_app.__qualname__}"
    else:
        # where its functions were defined first: the app may be imported elsewhere too
        funcs = getattr(client_app, "_registered_funcs", {}).values()
        homes = [f.__module__ for f in funcs if hasattr(f, "__module__")]
        names = [*dict.fromkeys(homes), *sys.modules]
        for name in names:
            module_obj = sys.modules.get(name)
            if name == "__main__" or module_obj is None:
                continue
            for attr, value in list(vars(module_obj).items()):
                if value is client_app and _IDENT.match(attr):
                    return f"{name}:{attr}"
    raise PlanError(
        "a site loads the ClientApp by reference, and this one is not a module-level name "
        "of an importable module (one defined in a script or a function is not); define it "
        "in a module the sites list in site.udf_modules and pass 'module:attribute'"
    )


def client_app_digest(client_app: Any) -> str:
    """The digest a site policy approves for ``client_app`` (object or ``module:attribute``).

    Examples
    --------
    >>> client_app_digest("my_flower_app:client_app")  # doctest: +SKIP
    'sha256:5f0c...'
    """
    module, _ = split_ref(client_app_ref(client_app))
    try:
        return module_digest(importlib.import_module(module))
    except ImportError as e:
        raise PlanError(f"cannot import the ClientApp's module {module!r}: {e}") from None


def check_approved(
    ref: str, digest: str, datasets: Sequence[str], policies: Mapping[str, Policy]
) -> None:
    """Refuse unless every dataset read lists ``"flower"`` and ``digest`` in ``trainers``."""
    for ds in sorted(set(datasets)):
        allowed = policies[ds].trainers
        if TRAINER_NAME in allowed and digest in allowed:
            continue
        raise PolicyViolation(
            f"ClientApp {ref!r} ({digest[:19]}...) is not approved for dataset {ds!r}: "
            f"its policy lists trainers {list(allowed)}; a site approves it with "
            f'trainers = ["{TRAINER_NAME}", "{digest}"]',
            dataset=ds,
            policy=policies[ds].egress,
        )


def load_client_app(ref: str, digest: str, *, modules: Sequence[str]) -> Any:
    """The ClientApp ``ref`` from a module the site loaded at start-up, checked by digest.

    Nothing is imported here: a request cannot make a site import code. A plain
    function is taken as a legacy ``client_fn`` and wrapped in ``ClientApp(client_fn=)``.
    """
    from flwr.clientapp import ClientApp

    module_name, attr = split_ref(ref)
    module = sys.modules.get(module_name) if module_name in modules else None
    if module is None:
        raise PolicyViolation(
            f"ClientApp {ref!r}: module {module_name!r} is not loaded at this site "
            f"(site.udf_modules lists: {', '.join(modules) or 'none'})"
        )
    if module_digest(module) != digest:
        raise PolicyViolation(
            f"ClientApp {ref!r}: the module at this site differs from the coordinator's "
            f"(digest {module_digest(module)[:19]}... here, {digest[:19]}... sent)"
        )
    app = getattr(module, attr, None)
    if isinstance(app, ClientApp):
        return app
    if inspect.isfunction(app):
        return ClientApp(client_fn=app)
    raise PolicyViolation(
        f"ClientApp {ref!r} is {type(app).__name__}, not a flwr ClientApp or a client_fn"
    )
