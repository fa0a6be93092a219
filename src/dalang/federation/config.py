"""Site configuration: the TOML a site operator writes, read and checked into frozen values.

Examples
--------
>>> cfg = load_config("site.toml")  # doctest: +SKIP
>>> cfg.datasets["transactions"].policy.egress  # doctest: +SKIP
'aggregates'
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalang.errors import DalangError

EGRESS = ("rows", "aggregates", "dp", "none")
#: Default for ``min_group_size`` when a policy names none.
DEFAULT_MIN_GROUP_SIZE = 10
#: Default ``epsilon_per_query`` of a ``dp`` policy.
DEFAULT_EPSILON_PER_QUERY = 1.0

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SITE_KEYS = {
    "name",
    "listen",
    "tls_cert",
    "tls_key",
    "client_ca",
    "tokens",
    "platforms",
    "audit_log",
    "budget_db",
    "udf_modules",
    "audit_share",
}
_DATASET_KEYS = {"source", "table", "policy"}
_POLICY_KEYS = {
    "egress",
    "min_group_size",
    "columns",
    "max_rows",
    "epsilon_budget",
    "epsilon_per_query",
    "delta",
    "bounds",
    "udfs",
    "trainers",
    "partitioned_by",
}


class ConfigError(DalangError, ValueError):
    """A site configuration that is wrong; names the file and the key."""

    def __init__(self, where: str, key: str, message: str) -> None:
        self.where = where
        self.key = key
        super().__init__(f"{where}: {key}: {message}")


@dataclass(frozen=True, slots=True)
class Policy:
    """What may leave a site from one dataset (see docs/FEDERATION.md)."""

    egress: str = "aggregates"
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    columns: tuple[str, ...] | None = None
    max_rows: int | None = None
    epsilon_budget: float | None = None
    epsilon_per_query: float = DEFAULT_EPSILON_PER_QUERY
    delta: float | None = None
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    udfs: tuple[str, ...] = ()
    trainers: tuple[str, ...] = ()
    #: Columns no other site holds a row with the same values of (the federation's data
    #: is split by them): the coordinator finishes groups by them at the site.
    partitioned_by: tuple[str, ...] = ()

    def to_json(self, *, epsilon_spent: float | None = None) -> dict[str, Any]:
        """The policy as the ``datasets`` action publishes it."""
        return {
            "egress": self.egress,
            "min_group_size": self.min_group_size,
            "columns": list(self.columns) if self.columns is not None else None,
            "max_rows": self.max_rows,
            "epsilon_budget": self.epsilon_budget,
            "epsilon_spent": epsilon_spent,
            "epsilon_per_query": self.epsilon_per_query if self.egress == "dp" else None,
            "delta": self.delta,
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "udfs": list(self.udfs),
            "trainers": list(self.trainers),
            "partitioned_by": list(self.partitioned_by),
        }


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    """One published dataset: a name, where it lives (fixed here), and its policy."""

    name: str
    source: str  # an absolute file path, or a database URI
    table: str | None
    policy: Policy

    @property
    def is_uri(self) -> bool:
        return "://" in self.source


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A whole site: its name, address, TLS files, accepted token digests and datasets."""

    name: str
    host: str
    port: int
    tokens: tuple[str, ...]
    datasets: Mapping[str, DatasetConfig]
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    platforms: tuple[str, ...] = ("python", "polars", "duckdb")
    audit_log: Path = Path("site.audit.jsonl")
    budget_db: Path = Path("site.budget.sqlite")
    udf_modules: tuple[str, ...] = ()
    base_dir: Path = Path(".")
    #: What the ``audit`` action shows a coordinator: ``none``, ``own`` (the entries of
    #: its own token) or ``all``.
    audit_share: str = "own"

    @property
    def scheme(self) -> str:
        return "grpc+tls" if self.tls_cert is not None else "grpc"

    def location(self, port: int | None = None) -> str:
        """``grpc+tls://host:port`` (``grpc://`` without a certificate)."""
        return f"{self.scheme}://{self.host}:{self.port if port is None else port}"


def load_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and check a site TOML file; relative paths are relative to the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(p), "(file)", "no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), "(syntax)", str(e)) from None
    return config_from_dict(doc, base_dir=p.resolve().parent, where=str(p))


def config_from_dict(
    doc: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] = ".",
    where: str = "<site config>",
) -> SiteConfig:
    """Check a config of the TOML's shape (e.g. a dict handed to ``Federation.local``)."""
    base = Path(base_dir).resolve()
    unknown = set(doc) - {"site", "datasets"}
    if unknown:
        raise ConfigError(where, sorted(unknown)[0], "unknown section; expected [site], [datasets]")
    site = _table(doc.get("site"), where, "site")
    _no_unknown(site, _SITE_KEYS, where, "site")
    name = _str(site.get("name"), where, "site.name")
    if not _NAME_RE.match(name):
        raise ConfigError(where, "site.name", f"{name!r} must be letters, digits and _")
    host, port = _listen(site.get("listen", "127.0.0.1:0"), where)
    tokens = tuple(_str_list(site.get("tokens", []), where, "site.tokens"))
    if not tokens:
        raise ConfigError(where, "site.tokens", 'give at least one "sha256:<hex digest>"')
    for t in tokens:
        if not _DIGEST_RE.match(t):
            raise ConfigError(
                where, "site.tokens", "each entry must be sha256:<64 hex digits> (never a token)"
            )
    tls_cert = _path(site.get("tls_cert"), base, where, "site.tls_cert")
    tls_key = _path(site.get("tls_key"), base, where, "site.tls_key")
    client_ca = _path(site.get("client_ca"), base, where, "site.client_ca")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError(where, "site.tls_key", "tls_cert and tls_key go together")
    if client_ca is not None and tls_cert is None:
        raise ConfigError(where, "site.client_ca", "mTLS needs tls_cert and tls_key too")
    platforms = tuple(
        _str_list(site.get("platforms", ["python", "polars", "duckdb"]), where, "site.platforms")
    )
    from dalang.platforms.registry import PLATFORMS

    for pname in platforms:
        if pname not in PLATFORMS:
            raise ConfigError(
                where, "site.platforms", f"unknown platform {pname!r}; known: {sorted(PLATFORMS)}"
            )
    audit_log = _path(site.get("audit_log", f"{name}.audit.jsonl"), base, where, "site.audit_log")
    budget_db = _path(site.get("budget_db", f"{name}.budget.sqlite"), base, where, "site.budget_db")
    udf_modules = tuple(_str_list(site.get("udf_modules", []), where, "site.udf_modules"))
    audit_share = _str(site.get("audit_share", "own"), where, "site.audit_share")
    if audit_share not in ("none", "own", "all"):
        raise ConfigError(
            where, "site.audit_share", f"{audit_share!r} must be one of none, own, all"
        )

    datasets_doc = _table(doc.get("datasets", {}), where, "datasets")
    datasets: dict[str, DatasetConfig] = {}
    for ds_name, ds in datasets_doc.items():
        key = f"datasets.{ds_name}"
        if not _NAME_RE.match(ds_name):
            raise ConfigError(where, key, "a dataset name must be letters, digits and _")
        datasets[ds_name] = _dataset(ds_name, _table(ds, where, key), base, where, key)
    assert audit_log is not None and budget_db is not None
    return SiteConfig(
        name=name,
        host=host,
        port=port,
        tokens=tokens,
        datasets=datasets,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        platforms=platforms,
        audit_log=audit_log,
        budget_db=budget_db,
        udf_modules=udf_modules,
        base_dir=base,
        audit_share=audit_share,
    )


def _dataset(name: str, ds: dict[str, Any], base: Path, where: str, key: str) -> DatasetConfig:
    _no_unknown(ds, _DATASET_KEYS, where, key)
    source = _str(ds.get("source"), where, f"{key}.source")
    table = ds.get("table")
    if "://" in source:
        if table is not None:
            table = _str(table, where, f"{key}.table")
    else:
        if table is not None:
            raise ConfigError(where, f"{key}.table", "only a database URI source takes a table")
        resolved = _path(source, base, where, f"{key}.source")
        assert resolved is not None
        if not resolved.exists():
            raise ConfigError(where, f"{key}.source", f"no such file: {resolved}")
        source = str(resolved)
    policy = _policy(_table(ds.get("policy", {}), where, f"{key}.policy"), where, f"{key}.policy")
    return DatasetConfig(name, source, table, policy)


def _policy(d: dict[str, Any], where: str, key: str) -> Policy:
    _no_unknown(d, _POLICY_KEYS, where, key)
    egress = d.get("egress", "aggregates")
    if egress not in EGRESS:
        raise ConfigError(where, f"{key}.egress", f"{egress!r} is not one of {', '.join(EGRESS)}")
    min_group = _int(
        d.get("min_group_size", DEFAULT_MIN_GROUP_SIZE), where, f"{key}.min_group_size"
    )
    if min_group < 1:
        raise ConfigError(where, f"{key}.min_group_size", "must be at least 1")
    columns = d.get("columns")
    if columns is not None:
        columns = tuple(_str_list(columns, where, f"{key}.columns"))
    max_rows = d.get("max_rows")
    if max_rows is not None:
        max_rows = _int(max_rows, where, f"{key}.max_rows")
        if max_rows < 0:
            raise ConfigError(where, f"{key}.max_rows", "must not be negative")
    budget = _num(d.get("epsilon_budget"), where, f"{key}.epsilon_budget")
    per_query = _num(
        d.get("epsilon_per_query", DEFAULT_EPSILON_PER_QUERY), where, f"{key}.epsilon_per_query"
    )
    delta = _num(d.get("delta"), where, f"{key}.delta")
    if per_query is None or per_query <= 0:
        raise ConfigError(where, f"{key}.epsilon_per_query", "must be positive")
    if delta is not None and not 0 < delta < 1:
        raise ConfigError(where, f"{key}.delta", "must be in (0, 1)")
    bounds: dict[str, tuple[float, float]] = {}
    for col, pair in _table(d.get("bounds", {}), where, f"{key}.bounds").items():
        ok = isinstance(pair, list) and len(pair) == 2
        lo = _num(pair[0], where, f"{key}.bounds.{col}") if ok else None
        hi = _num(pair[1], where, f"{key}.bounds.{col}") if ok else None
        if lo is None or hi is None or lo > hi:
            raise ConfigError(where, f"{key}.bounds.{col}", "must be [low, high] with low <= high")
        bounds[col] = (lo, hi)
    if egress == "dp":
        if budget is None or budget <= 0:
            raise ConfigError(where, f"{key}.epsilon_budget", "egress 'dp' needs a positive budget")
        if columns is not None:
            for col in bounds:
                if col not in columns:
                    raise ConfigError(where, f"{key}.bounds.{col}", "not a published column")
    udfs = tuple(_str_list(d.get("udfs", []), where, f"{key}.udfs"))
    for u in udfs:
        if not _DIGEST_RE.match(u):
            raise ConfigError(where, f"{key}.udfs", f"{u!r} is not sha256:<64 hex digits>")
    trainers = tuple(_str_list(d.get("trainers", []), where, f"{key}.trainers"))
    partitioned_by = tuple(_str_list(d.get("partitioned_by", []), where, f"{key}.partitioned_by"))
    if columns is not None:
        for col in partitioned_by:
            if col not in columns:
                raise ConfigError(
                    where, f"{key}.partitioned_by", f"{col!r} is not a published column"
                )
    return Policy(
        egress=egress,
        min_group_size=min_group,
        columns=columns,
        max_rows=max_rows,
        epsilon_budget=budget,
        epsilon_per_query=per_query,
        delta=delta,
        bounds=bounds,
        udfs=udfs,
        trainers=trainers,
        partitioned_by=partitioned_by,
    )


# ---- small checked readers -------------------------------------------------
def _table(v: Any, where: str, key: str) -> dict[str, Any]:
    if v is None:
        raise ConfigError(where, key, "missing section")
    if not isinstance(v, Mapping):
        raise ConfigError(where, key, f"must be a table, got {type(v).__name__}")
    return dict(v)


def _no_unknown(d: Mapping[str, Any], known: set[str], where: str, key: str) -> None:
    for k in d:
        if k not in known:
            raise ConfigError(
                where, f"{key}.{k}", f"unknown key; known: {', '.join(sorted(known))}"
            )


def _str(v: Any, where: str, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(where, key, "must be a non-empty string")
    return v


def _str_list(v: Any, where: str, key: str) -> list[str]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(where, key, "must be a list of strings")
    return list(v)


def _int(v: Any, where: str, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(where, key, "must be an integer")
    return v


def _num(v: Any, where: str, key: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(where, key, "must be a finite number")
    return float(v)


def _path(v: Any, base: Path, where: str, key: str) -> Path | None:
    if v is None:
        return None
    p = Path(_str(v, where, key)).expanduser()
    return p if p.is_absolute() else base / p


def _listen(v: Any, where: str) -> tuple[str, int]:
    text = _str(v, where, "site.listen")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            where, "site.listen", f"{text!r} must be host:port (port 0: any free one)"
        )
    return host.strip("[]"), int(port_text)


# ---- writing ---------------------------------------------------------------
def to_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for a config dict of the shape :func:`config_from_dict` reads."""
    lines: list[str] = []

    def emit(prefix: str, table: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        subtables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not subtables):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in subtables.items():
            emit(f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), v)

    emit("", doc)
    return "\n".join(lines) + "\n"


def write_config(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as TOML to ``path`` and return the path."""
    p = Path(path)
    p.write_text(to_toml(doc))
    return p


def _toml_key(k: str) -> str:
    return k if re.match(r"^[A-Za-z0-9_-]+$", k) else _toml_value(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, os.PathLike)):
        s = os.fspath(v)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")
