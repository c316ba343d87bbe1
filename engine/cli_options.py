"""The command line's options: their types, choices and checks (run at parse time, so a bad
value is a usage error naming the option, before any command starts)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.cli_boundary import fail


def check_text(value: str) -> str:
    """Text the store can hold (the shell may pass undecodable bytes): `engine.text`'s rule."""
    from engine.text import text_problem

    if problem := text_problem(value):
        raise typer.BadParameter(problem)
    return value


def text_option(value: Any) -> Any:
    """Option callback: `check_text` on a value or on each value of a list."""
    if isinstance(value, list | tuple):
        return [check_text(v) for v in value]
    return check_text(value) if isinstance(value, str) else value


def unit_option(value: str) -> str:
    if not value:
        raise typer.BadParameter("must not be empty")
    return check_text(value)


def finite_in(low: float, high: float) -> Callable[[Any], Any]:
    """Option callback: a finite number in [low, high] (click's ranges let NaN through), and
    one message for every range: the allowed one."""
    def check(value: Any) -> Any:
        if value is not None and not low <= value <= high:  # False for NaN
            raise typer.BadParameter(f"must be a number in [{low:g}, {high:g}], got {value}")
        return value
    return check


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


class DecideFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class CorrectionChoice(StrEnum):
    """The values of engine.spec.Correction (a test keeps them equal): `--help` must not load
    the experiment model."""

    HOLM = "holm"
    BH = "bh"
    BONFERRONI = "bonferroni"
    NONE = "none"


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL [default: CROSSPROMO_DATABASE_URL, then configs/engine.yaml].",
                 callback=text_option),
]
PathsArg = Annotated[
    list[Path] | None, typer.Argument(help="Experiment files or directories [default: experiments/].")
]
ExperimentArg = Annotated[str, typer.Argument(help="Experiment key.", callback=text_option)]
ExperimentsArg = Annotated[list[str] | None, typer.Argument(help="Experiment keys [default: all].",
                                                            callback=text_option)]
Seed = Annotated[int, typer.Option(min=0, help="Seed (>= 0).")]


def parse_context(pairs: list[str]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--context expects key=value, got {pair!r}")
        context[key] = value
    return context


class InputFormatChoice(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


class EvaluateFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class RecommenderChoice(StrEnum):
    """The recommenders of engine.spec.Recommender except "none" (a test keeps them equal)."""

    ITEM_CF = "item_cf"
    CONTENT = "content"
    SVD = "svd"
    SOCIAL = "social"
    HYBRID = "hybrid"


def check_bind(host: str, port: int) -> None:
    """`host` resolves to an address this machine can bind, on a free `port` (uvicorn would fail
    later, less clearly, with an exit code of its own)."""
    import socket

    if not host.strip():
        raise typer.BadParameter("empty host", param_hint="'--host'")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise typer.BadParameter(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="'--host'") from None
    with socket.socket(family, kind, proto) as probe:  # taken or forbidden: say so now, not as uvicorn's exit 3
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                 "another process may hold the port: choose another --port, or stop it")


def is_loopback(host: str) -> bool:
    """True if every address `host` resolves to is a loopback one (127.0.0.0/8, ::1)."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_store_exists(url: str) -> None:
    """A read-only command on a SQLite file that is not there fails instead of creating it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" and not Path(database).exists():
        raise typer.BadParameter(f"no store at {database}", param_hint="'--db'")
