"""The one exception tree of dalang.

::

    DalangError
    ├── PlanError                      a plan that cannot be built as written
    │   ├── ColumnNotFound (KeyError)  a column name that is not in the input
    │   ├── TypeMismatch (TypeError)   an expression over types that do not fit
    │   └── SchemaMismatch             inputs whose schemas must agree but do not
    ├── SqlError                       SQL that cannot be turned into a plan
    │   └── SqlSyntaxError             SQL that does not parse (carries line/column)
    ├── SourceError                    a reader that cannot read its input
    │   ├── SourceNotFound (FileNotFoundError)
    │   ├── MalformedInput (ValueError)   a row that does not parse (carries the line)
    │   └── DatabaseError              a database that fails (carries the masked uri, table)
    │       ├── TableNotFound (LookupError)        no such table (lists the tables there)
    │       ├── DatabaseAuthError (PermissionError)  wrong password or unknown user
    │       └── DatabaseUnreachable (ConnectionError)  no server answers at that address
    ├── ExecutionError                 a failure while a plan runs
    │   ├── UdfError                   a user function raised (carries the operator)
    │   └── PlatformError              a platform failed on a fragment
    ├── OptimizerError                 no platform can run some operator
    ├── PlatformUnavailable (ImportError)  an optional engine that is not installed
    └── FederationError                a site refused or failed (carries site, retryable)
        ├── SiteUnavailable            a site that is down or timed out
        ├── AuthenticationFailed       a missing or wrong token (or certificate)
        ├── PolicyViolation            a fragment a site's policy forbids (dataset, policy)
        │   └── BudgetExhausted        a differential privacy budget that is spent
        ├── ReplayRefused              a nonce seen before, or a clock too far off
        ├── InvalidPlan (ValueError)   a request or plan a site cannot decode
        ├── UpdateRejected (ValueError)  a model update refused (shape, dtype, NaN, norm; reason)
        └── FlowerAppError             a Flower ServerApp or ClientApp that failed (site if known)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DalangError(Exception):
    """Root of every error dalang raises on purpose."""


class PlanError(DalangError):
    """A plan that cannot be built as written."""


class ColumnNotFound(PlanError, KeyError):
    """A column name that is not in the input; suggests the closest names."""

    def __init__(self, name: str, available: Iterable[str], *, where: str = "input") -> None:
        self.name = name
        self.available = tuple(available)
        self.where = where
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(self.available[:20])
        more = ", ..." if len(self.available) > 20 else ""
        super().__init__(f"{name!r} not in {where}{hint} (columns: {shown}{more})")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class TypeMismatch(PlanError, TypeError):
    """An expression over types that do not fit together."""


class SchemaMismatch(PlanError):
    """Inputs whose schemas must agree (union, federation) but do not."""


class SqlError(DalangError):
    """SQL that cannot be turned into a plan."""


class SqlSyntaxError(SqlError):
    """SQL that does not parse; carries the position of the problem."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        super().__init__(message)


class SourceError(DalangError):
    """A reader that cannot read its input."""


class SourceNotFound(SourceError, FileNotFoundError):
    """A path that does not exist."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no such file: {path!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class MalformedInput(SourceError, ValueError):
    """An input row that does not parse; ``line`` is 1-based when known."""

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class DatabaseError(SourceError):
    """A database that cannot be read; ``uri`` has its password masked."""

    def __init__(self, message: str, *, uri: str, table: str | None = None) -> None:
        self.uri = uri
        self.table = table
        where = f"{uri}, table {table!r}" if table else uri
        super().__init__(f"{where}: {message}")

    def __str__(self) -> str:
        return str(self.args[0])


class TableNotFound(DatabaseError, LookupError):
    """A table that does not exist in the database; ``known`` lists those that do."""

    def __init__(self, table: str, *, uri: str, known: Iterable[str] = ()) -> None:
        self.known = tuple(known)
        close = difflib.get_close_matches(table, self.known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(self.known[:20]) + (", ..." if len(self.known) > 20 else "")
        listing = f" (tables: {shown})" if self.known else ""
        super().__init__(f"no such table{hint}{listing}", uri=uri, table=table)


class DatabaseAuthError(DatabaseError, PermissionError):
    """A login the database refuses: a wrong password or an unknown user."""


class DatabaseUnreachable(DatabaseError, ConnectionError):
    """No database server answers at the URI's host and port."""


class ExecutionError(DalangError):
    """A failure while a plan runs."""


class UdfError(ExecutionError):
    """A user function raised; the original exception is ``__cause__``."""

    def __init__(self, operator: str, function: str, error: BaseException) -> None:
        self.operator = operator
        self.function = function
        self.original = error
        super().__init__(
            f"user function {function} in {operator} raised {type(error).__name__}: {error}"
        )


class PlatformError(ExecutionError):
    """A platform failed while running a fragment of a plan."""

    def __init__(self, platform: str, message: str) -> None:
        self.platform = platform
        super().__init__(f"[{platform}] {message}")


class OptimizerError(DalangError):
    """No allowed platform can run some operator of the plan."""


class PlatformUnavailable(DalangError, ImportError):
    """An optional engine that is not installed; says what to install."""

    def __init__(self, platform: str, extra: str) -> None:
        self.platform = platform
        super().__init__(f"the {platform} platform needs: pip install 'dalang[{extra}]'")


class FederationError(DalangError):
    """A site refused or failed a request; carries ``site`` and ``retryable``."""

    def __init__(self, message: str, *, site: str | None = None, retryable: bool = False) -> None:
        self.site = site
        self.retryable = retryable
        self.message = message
        super().__init__(f"[{site}] {message}" if site else message)


class SiteUnavailable(FederationError):
    """A site that is down, unreachable or timed out."""

    def __init__(self, message: str, *, site: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, site=site, retryable=retryable)


class AuthenticationFailed(FederationError):
    """A missing or wrong bearer token (or client certificate)."""


class PolicyViolation(FederationError):
    """A fragment that the policy of ``dataset`` (``policy``: its egress) does not allow."""

    def __init__(
        self,
        message: str,
        *,
        site: str | None = None,
        dataset: str | None = None,
        policy: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.dataset = dataset
        self.policy = policy
        super().__init__(message, site=site, retryable=retryable)


class BudgetExhausted(PolicyViolation):
    """A query whose privacy cost would exceed the dataset's remaining epsilon budget."""


class ReplayRefused(FederationError):
    """A request whose nonce was seen before, or whose time is too far from the site's clock."""


class InvalidPlan(FederationError, ValueError):
    """A ticket, action body or plan that a site cannot decode or run."""


class UpdateRejected(FederationError, ValueError):
    """A model update that is refused: wrong shape or dtype, NaN/inf, or an outsize norm.

    ``reason`` says which; ``site`` is the sender when known.
    """

    def __init__(self, reason: str, *, site: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"update rejected: {reason}", site=site, retryable=False)


class FlowerAppError(FederationError):
    """A Flower app run by ``fed.run_flower`` that failed: the ServerApp raised or did not
    finish in time, or a site's ClientApp raised (``site`` names it)."""
