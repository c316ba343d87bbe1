"""Hostile command lines: one row per kind of bad argument, for every command.

Each row asserts the exit code (2 for arguments the parser refuses, 1 for values the command
refuses), that the message is an `error:` line naming the option or path at fault, that no
traceback is printed, and that the store's decisions are untouched (a refused command writes
nothing).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, BANDIT_YAML, REPO, REVENUE_YAML, write_yaml

runner = CliRunner()
LAND = ["decide", "landing", "--unit"]
PLAN = ["sample-size", "--baseline", "0.1"]
EVAL = ["evaluate", "log.csv", "--experiment", "channels"]
RUNS = ["simulate", "channels", "--runs", "2", "--truth", "by-email=0.05", "--truth", "by-push=0.05", "--truth",
        "by-sms=0.05"]

# (id, arguments, exit code, what the message must name)
CASES: list[tuple[str, list[str], int, list[str]]] = [
    # validate / apply
    ("validate-missing-path", ["validate", "nope"], 1, ["nope", "no such file"]),
    ("validate-path-is-missing-file", ["validate", "experiments/nope.yaml"], 1, ["experiments/nope.yaml"]),
    ("apply-missing-path", ["apply", "nope"], 1, ["nope"]),
    # decide
    ("decide-no-unit", ["decide", "landing"], 2, ["--unit"]),
    ("decide-empty-unit", [*LAND, ""], 2, ["--unit", "empty"]),
    ("decide-nul-unit", [*LAND, "u\x00"], 2, ["--unit", "NUL"]),
    ("decide-non-utf8-unit", [*LAND, "u\udcff"], 2, ["--unit", "UTF-8"]),
    ("decide-nul-context", [*LAND, "u", "--context", "a=b\x00"], 2, ["--context", "NUL"]),
    ("decide-non-utf8-context", [*LAND, "u", "--context", "a=\udcfe"], 2, ["--context", "UTF-8"]),
    ("decide-context-no-equals", [*LAND, "u", "--context", "novalue"], 1, ["--context", "key=value"]),
    ("decide-context-empty-key", [*LAND, "u", "--context", "=v"], 1, ["--context"]),
    ("decide-unknown-experiment", ["decide", "nope", "--unit", "u"], 1, ["unknown experiment 'nope'", "hint:"]),
    ("decide-nul-experiment", ["decide", "land\x00ing", "--unit", "u"], 2, ["experiment", "NUL"]),
    ("decide-bad-format", [*LAND, "u", "--format", "xml"], 2, ["--format"]),
    ("decide-unknown-option", [*LAND, "u", "--bogus"], 2, ["--bogus"]),
    # record / ingest
    ("record-malformed-json", ["record", "{bad"], 1, ["malformed JSON"]),
    ("record-not-an-object", ["record", "[]"], 1, ["JSON object"]),
    ("record-infinity", ["record", '{"event_id": "e", "experiment": "landing", "value": Infinity}'], 1,
     ["Infinity"]),
    ("record-non-utf8", ["record", '{"event_id": "\udcff"}'], 2, ["event", "UTF-8"]),
    ("ingest-missing-file", ["ingest", "nope.jsonl"], 2, ["nope.jsonl"]),
    ("ingest-directory", ["ingest", "adir"], 2, ["adir", "directory"]),
    # report / winners
    ("report-nul-experiment", ["report", "land\x00ing"], 2, ["experiments", "NUL"]),
    ("report-unknown-experiment", ["report", "nope"], 1, ["unknown experiment 'nope'"]),
    ("report-bad-format", ["report", "--format", "pdf"], 2, ["--format"]),
    ("report-plot-is-a-file", ["report", "landing", "--plot", "afile"], 2, ["--plot", "afile"]),
    ("report-by-unknown-attribute", ["report", "landing", "--by", "nope"], 2, ["--by 'nope'", "hint: use channel"]),
    ("report-by-nul", ["report", "landing", "--by", "seg\x00ment"], 2, ["--by", "NUL"]),
    ("report-by-no-value", ["report", "landing", "--by"], 2, ["--by"]),
    ("winners-unknown-experiment", ["winners", "nope"], 1, ["unknown experiment 'nope'"]),
    ("winners-non-utf8-experiment", ["winners", "\udcff"], 2, ["experiments", "UTF-8"]),
    # sample-size
    ("plan-mde-too-small", [*PLAN, "--mde", "1e-12"], 2, ["--mde", "too small"]),
    ("plan-mde-nan", [*PLAN, "--mde", "nan"], 2, ["--mde"]),
    ("plan-mde-inf", [*PLAN, "--mde", "inf"], 2, ["--mde"]),
    ("plan-mde-zero", [*PLAN, "--mde", "0"], 2, ["--mde"]),
    ("plan-baseline-above-1", ["sample-size", "--baseline", "2", "--mde", "0.1"], 2, ["--baseline"]),
    ("plan-baseline-not-a-number", ["sample-size", "--baseline", "abc", "--mde", "0.1"], 2, ["--baseline"]),
    ("plan-alpha-zero", [*PLAN, "--mde", "0.1", "--alpha", "0"], 2, ["--alpha"]),
    ("plan-power-above-1", [*PLAN, "--mde", "0.1", "--power", "1.5"], 2, ["--power"]),
    ("plan-one-arm", [*PLAN, "--mde", "0.1", "--arms", "1"], 2, ["--arms"]),
    ("plan-negative-arms", [*PLAN, "--mde", "0.1", "--arms", "-5"], 2, ["--arms"]),
    ("plan-negative-std", [*PLAN, "--mde", "0.1", "--std", "-1"], 2, ["--std"]),
    ("plan-nan-std", [*PLAN, "--mde", "0.1", "--std", "nan"], 2, ["--std"]),
    ("plan-std-near-zero", ["sample-size", "--baseline", "10", "--mde", "0.05", "--std", "1e-15"], 2, ["--std"]),
    ("plan-unknown-correction", [*PLAN, "--mde", "0.1", "--correction", "nope"], 2, ["--correction"]),
    # demo
    ("demo-negative-users", ["demo", "--users", "-1"], 2, ["--users"]),
    ("demo-negative-seed", ["demo", "--seed", "-3"], 2, ["--seed"]),
    ("demo-out-is-a-store", ["demo", "--users", "10", "--out", "crosspromo.db"], 1,
     ["--out", "crosspromo.db", "not a demo store", "--force"]),
    ("demo-out-is-a-file", ["demo", "--users", "10", "--out", "afile"], 1, ["--out", "afile", "--force"]),
    ("demo-out-is-a-directory", ["demo", "--users", "10", "--out", "adir"], 1, ["--out", "adir", "directory"]),
    ("demo-out-missing-directory", ["demo", "--users", "10", "--out", "nodir/x.db"], 1, ["--out", "nodir"]),
    ("demo-config-missing", ["demo", "--users", "10", "--config", "nope.yaml", "--out", "d.db"], 1, ["nope.yaml"]),
    ("demo-config-directory", ["demo", "--users", "10", "--config", "adir"], 2, ["--config", "adir"]),
    # simulate
    ("simulate-unknown-experiment", ["simulate", "nope"], 1, ["nope"]),
    ("simulate-zero-users", ["simulate", "channels", "--users", "0"], 2, ["--users"]),
    ("simulate-negative-seed", ["simulate", "channels", "--seed", "-1"], 2, ["--seed"]),
    ("simulate-plot-is-a-file", ["simulate", "channels", "--plot", "afile"], 2, ["--plot", "afile"]),
    ("simulate-zero-runs", ["simulate", "channels", "--runs", "0"], 2, ["--runs"]),
    ("simulate-zero-look-every", [*RUNS, "--look-every", "0"], 2, ["--look-every"]),
    ("simulate-zero-max-exposures", [*RUNS, "--max-exposures", "0"], 2, ["--max-exposures"]),
    ("simulate-look-every-past-the-run", [*RUNS, "--max-exposures", "100", "--look-every", "500"], 2,
     ["--look-every", "exceeds", "100"]),
    ("simulate-look-every-without-runs", ["simulate", "channels", "--look-every", "10"], 2, ["--look-every", "--runs"]),
    ("simulate-users-with-runs", [*RUNS, "--users", "10"], 2, ["--users", "--max-exposures"]),
    ("simulate-plot-with-runs", [*RUNS, "--plot", "adir"], 2, ["--plot", "--runs"]),
    ("simulate-runs-without-truth", ["simulate", "channels", "--runs", "2"], 1, ["no true rate", "--truth"]),
    # evaluate
    ("evaluate-strength-above-1", [*EVAL, "--strength", "5"], 2, ["--strength", "[0, 1]"]),
    ("evaluate-strength-negative", [*EVAL, "--strength", "-0.1"], 2, ["--strength", "[0, 1]"]),
    ("evaluate-strength-nan", [*EVAL, "--strength", "nan"], 2, ["--strength"]),
    ("evaluate-strength-inf", [*EVAL, "--strength", "inf"], 2, ["--strength"]),
    ("evaluate-zero-resamples", [*EVAL, "--resamples", "0"], 2, ["--resamples"]),
    ("evaluate-unknown-recommender", [*EVAL, "--recommender", "bogus"], 2, ["--recommender"]),
    ("evaluate-missing-log", ["evaluate", "nope.csv", "--experiment", "channels"], 2, ["nope.csv"]),
    ("evaluate-log-is-a-directory", ["evaluate", "adir", "--experiment", "channels"], 2, ["adir", "directory"]),
    ("evaluate-binary-log", ["evaluate", "bin.csv", "--experiment", "channels"], 1, ["bin.csv", "UTF-8"]),
    ("evaluate-unknown-experiment", ["evaluate", "log.csv", "--experiment", "nope"], 1, ["nope"]),
    # export-log
    ("export-out-is-a-directory", ["export-log", "channels", "--out", "adir"], 2, ["--out", "adir"]),
    ("export-out-under-a-file", ["export-log", "channels", "--out", "afile/x.csv"], 1, ["--out", "afile"]),
    ("export-unknown-experiment", ["export-log", "nope", "--out", "x.csv"], 1, ["unknown experiment 'nope'"]),
    # serve (refused before anything listens)
    ("serve-port-above-65535", ["serve", "--port", "70000"], 2, ["--port", "65535"]),
    ("serve-port-zero", ["serve", "--port", "0"], 2, ["--port", "65535"]),
    ("serve-port-negative", ["serve", "--port", "-1"], 2, ["--port"]),
    ("serve-port-not-a-number", ["serve", "--port", "abc"], 2, ["--port"]),
    ("serve-zero-workers", ["serve", "--workers", "0"], 2, ["--workers"]),
    ("serve-empty-host", ["serve", "--host", ""], 2, ["--host"]),
    ("serve-unresolvable-host", ["serve", "--host", "no such host.invalid"], 2, ["--host"]),
    ("serve-nul-host", ["serve", "--host", "local\x00host"], 2, ["--host", "NUL"]),
    # anywhere
    ("unknown-command", ["bogus-command"], 2, ["bogus-command"]),
]


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experiments, a store with decisions, a file, a directory, a log and a binary file."""
    root = tmp_path_factory.mktemp("hostile-cli")
    write_yaml(root / "experiments", "landing.yaml", AB_YAML)
    write_yaml(root / "experiments", "channels.yaml", BANDIT_YAML)
    write_yaml(root / "experiments", "bundle.yaml", REVENUE_YAML)
    (root / "configs").mkdir()
    (root / "configs" / "demo.yaml").write_text((REPO / "configs" / "demo.yaml").read_text())
    with Engine.open(f"sqlite:///{root / 'crosspromo.db'}", seed=0) as engine:
        engine.apply([root / "experiments"])
        for i in range(20):
            engine.decide("landing", f"u{i}", {})
    (root / "adir").mkdir()
    (root / "afile").write_text("hi\n")
    (root / "log.csv").write_text("arm,reward,propensity\nby-email,1,0.5\n")
    (root / "bin.csv").write_bytes(bytes(range(128, 256)) * 3)
    return root


@pytest.fixture
def workdir(playground: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.chdir(playground)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(tmp_path / "crosspromo.log"))
    yield playground


def stored_decisions(root: Path) -> int:
    with sqlite3.connect(root / "crosspromo.db") as conn:
        return conn.execute("SELECT count(*) FROM decisions").fetchone()[0]


@pytest.mark.parametrize(("args", "code", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_arguments_get_one_clean_error(workdir: Path, args: list[str], code: int, names: list[str]) -> None:
    before = stored_decisions(workdir)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.output.startswith("error: "), result.output
    assert_no_traceback(result.output)
    assert_names(result.output, *names)
    assert "internal error" not in result.output
    assert stored_decisions(workdir) == before
    assert (workdir / "crosspromo.db").exists()


RAW_BYTES = [
    ("latin1-byte", b"u\xff"),
    ("lone-continuation-byte", b"\x80"),
    ("truncated-sequence", b"caf\xc3"),
]


@pytest.mark.parametrize("unit", [r[1] for r in RAW_BYTES], ids=[r[0] for r in RAW_BYTES])
def test_undecodable_argv_bytes_name_the_option(workdir: Path, unit: bytes) -> None:
    """The shell passes bytes: Python decodes argv with surrogateescape, as in `--unit $'u\\xff'`."""
    argv = [sys.executable.encode(), b"-m", b"engine.cli", b"decide", b"landing", b"--unit", unit]
    done = subprocess.run(argv, capture_output=True, cwd=workdir, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8",
                               "CROSSPROMO_LOG_FILE": str(workdir / "argv.log")})
    text = done.stderr.decode("utf-8", "replace") + done.stdout.decode("utf-8", "replace")
    assert done.returncode == 2, text
    assert_no_traceback(text)
    assert_names(text, "error: ", "--unit", "UTF-8")
