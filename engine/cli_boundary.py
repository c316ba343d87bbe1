"""The command line's one error boundary (`GuardedGroup.invoke`) and its exit codes.

A user error prints `error: ...` and a `hint: ...` and exits with its code, never a
traceback; an unexpected exception prints `error: internal error (id X)` and the traceback
goes, with the id, to the log file (`CROSSPROMO_LOG_FILE`, default
`$XDG_STATE_HOME/crosspromo/crosspromo.log`; also to stderr with `CROSSPROMO_DEBUG=1`).
Warnings from libraries go to that log, not the user.

Exit codes: 0 success; 1 error (unknown experiment, unsafe change, bad file or value);
2 invalid input (experiment files, command-line arguments); 3 SRM with `--fail-on-srm`;
4 the store cannot be used (unreachable, locked by another writer, read-only, corrupted,
bad URL); 70 internal error. Light on imports: it runs before every command, `--help` included.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from engine.redact import redact_text

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import UsageError  # type: ignore[no-redef]

# Piped output is not cut at 80 columns: wide tables stay whole in files and CI logs.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_SRM = 3
EXIT_GUARDRAIL = 4
EXIT_STORE = 5
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)
LOG_FILE_ENV = "CROSSPROMO_LOG_FILE"
DEBUG_ENV = "CROSSPROMO_DEBUG"

log = logging.getLogger("crosspromo.cli")
_store_url: str | None = None  # the store the running command opened, for error messages


def remember_store(url: str) -> str:
    """Name the store the running command opens, so that its errors can name it (redacted)."""
    global _store_url
    _store_url = url
    return url


class UserError(Exception):
    """An error the user can fix: printed as `error: message` and `hint: hint`, exit `code`.
    `located` messages are already `file:line:col: ...` lines and are printed as they are."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_ERROR, *, located: bool = False) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code
        self.located = located


def fail(message: str, hint: str = "", code: int = EXIT_ERROR) -> NoReturn:
    raise UserError(message, hint, code)


def _loaded(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Exception classes `names` of `module` if that module is loaded, else () (matches nothing):
    an error cannot come from a module that was never imported, so the boundary stays light."""
    loaded = sys.modules.get(module)
    return tuple(getattr(loaded, n) for n in names) if loaded is not None else ()


def user_error(exc: BaseException) -> UserError | None:
    """What `exc` means for the user, or None if it is unexpected (a bug)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, _loaded("engine.config", "ConfigError")):
        return UserError("\nerror: ".join(map(str, exc.problems)), exc.hint, EXIT_INVALID)
    if isinstance(exc, _loaded("engine.loader", "SpecError")):
        return UserError("\n".join(str(p) for p in exc.problems), code=EXIT_INVALID, located=True)
    if isinstance(exc, _loaded("policies.stats.planning", "PlanningError")):
        return UserError(f"--{exc.field}: {exc.reason}", "see 'crosspromo sample-size --help'", EXIT_INVALID)
    db = sys.modules.get("engine.db")
    store = db.store_error(exc, _store_url or "") if db is not None else None
    if store is not None:
        return UserError(str(store), store.hint, EXIT_STORE)
    if isinstance(exc, _loaded("engine.api", "UnknownExperimentError", "UnsafeChangeError")):
        return UserError(str(exc), exc.hint)
    if isinstance(exc, _loaded("pydantic", "ValidationError")):
        return UserError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                                   for e in exc.errors(include_url=False)))
    if isinstance(exc, OSError):  # the file system said no: a path to fix, not a bug
        where = f"{exc.filename}: {exc.strerror or exc}" if exc.filename is not None else str(exc)
        return UserError(where, "check the path and its permissions")
    if isinstance(exc, ValueError):  # the engine's convention for a bad value it was given
        return UserError(redact_text(str(exc)))
    return None


def _say(error: UserError) -> None:
    err.print(str(error) if error.located else f"error: {error}", markup=False)
    if error.hint:
        err.print(f"hint: {error.hint}", markup=False)


def log_path() -> Path:
    """Where internal errors and library warnings are logged."""
    if os.environ.get(LOG_FILE_ENV):
        return Path(os.environ[LOG_FILE_ENV])
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "crosspromo" / "crosspromo.log"


class _LogFile(logging.FileHandler):
    """A log file opened (and its directory made) on the first record only. A record it cannot
    write is dropped quietly: logging's default prints a traceback to stderr."""

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        self.failed = False
        try:
            super().emit(record)
        except OSError:  # opening the file is outside logging's own error handling
            self.failed = True

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True


def _configure_log() -> None:
    path = str(log_path().absolute())
    if any(getattr(h, "baseFilename", None) == path for h in log.handlers):
        return
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = _LogFile(path, delay=True, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if os.environ.get(DEBUG_ENV) == "1":
        log.addHandler(logging.StreamHandler(sys.stderr))
    log.setLevel(logging.INFO)
    log.propagate = False  # nothing of this logger reaches the user's terminal by default


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    log.warning("%s", redact_text(warnings.formatwarning(message, category, filename, lineno, line).strip()))


def internal_error(exc: BaseException, command: str) -> UserError:
    """Log `exc` with its traceback under a fresh id; the one line the user sees names the id."""
    from engine.incident import record_incident

    incident = record_incident(log, exc, f"`crosspromo {command}`")
    logged = not any(getattr(h, "failed", False) for h in log.handlers)
    where = (f"details in the log {log_path()}" if logged
             else f"the log {log_path()} cannot be written; set {DEBUG_ENV}=1 to see the details")
    return UserError(f"internal error (id {incident}); {where}",
                     "this is a bug in crosspromo: please report it with that log entry", EXIT_INTERNAL)


class GuardedGroup(TyperGroup):
    """The CLI's one error boundary: every command, and its argument parsing, runs in `invoke`."""

    def invoke(self, ctx: typer.Context) -> Any:
        global _store_url
        _store_url = None
        _configure_log()
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning
            try:
                return super().invoke(ctx)
            except (typer.Exit, typer.Abort):
                raise
            except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly, as rich does
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
                raise typer.Exit(EXIT_ERROR) from None
            except UsageError as exc:
                command = exc.ctx.command_path if exc.ctx is not None else "crosspromo"
                _say(UserError(exc.format_message(), f"see '{command} --help'", exc.exit_code))
                raise typer.Exit(exc.exit_code) from None
            except Exception as exc:
                error = user_error(exc) or internal_error(exc, ctx.invoked_subcommand or "")
                _say(error)
                raise typer.Exit(error.code) from None
