"""Hostile experiment files, fed to `crosspromo validate` and `crosspromo apply --dry-run` as a
user would: each kind exits 2 naming `file:line:col` and the field, prints no traceback, and the
good file beside it is still checked (and reported valid). Odd but valid files are accepted."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, BANDIT_YAML

BAD = AB_YAML.replace("key: landing", "key: bad-one")
ARM0 = "  - {key: control, campaign: grid, partner: art-collection, channel: in_app, weight: 0.5}"
ARM1 = "  - {key: curated, campaign: curated, partner: art-collection, channel: in_app, weight: 0.5}"


def edit(old: str, new: str) -> str:
    assert old in BAD, old
    return BAD.replace(old, new, 1)


def payload(value: str) -> str:
    return edit(ARM1, ARM1[:-1] + f", payload: {{v: {value}}}}}")


def laughs() -> str:
    lines = ["a0: &a0 [lol]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def metrics(text: str) -> str:
    return edit("metric: {name: purchase, type: binary}", text)


GUARDRAIL = "{name: unsub, role: guardrail, direction: decrease, margin: 0.2}"
# Metric declarations (line 7 of BAD holds them).
METRIC_CASES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("guardrail without a margin", metrics("metrics: [{name: purchase}, {name: unsub, role: guardrail, direction: "
                                           "decrease}]"), ("bad.yaml:7:29", "metrics[1].margin", "needs a margin")),
    ("guardrail without a direction", metrics("metrics: [{name: purchase}, {name: unsub, role: guardrail, margin: "
                                              "0.2}]"), ("bad.yaml:7:29", "metrics[1].direction")),
    ("two primary metrics", metrics("metrics: [{name: purchase}, {name: unsub}]"),
     ("bad.yaml:7:1", "metrics", "exactly one metric must have role: primary, found 2")),
    ("no primary metric", metrics("metrics: [{name: purchase, role: secondary}]"), ("bad.yaml:7:1", "found 0")),
    ("metric and metrics", metrics("metric: {name: purchase}\nmetrics: [{name: purchase}]"),
     ("bad.yaml:8:1", "not both")),
    ("no metric at all", metrics(""), ("bad.yaml:1:1", "declare `metric:` or `metrics:`")),
    ("empty metrics list", metrics("metrics: []"), ("bad.yaml:7:1", "metrics", "at least 1 item")),
    ("duplicate metric name", metrics("metrics: [{name: purchase}, {name: purchase, role: secondary}]"),
     ("bad.yaml:7:36", "metrics[1].name", "duplicate metric name 'purchase'")),
    ("window in weeks", metrics("metrics: [{name: purchase, window: 7w}]"),
     ("bad.yaml:7:36", "metrics[0].window", "hours or days")),
    ("window of zero days", metrics("metrics: [{name: purchase, window: 0d}]"), ("metrics[0].window", "12h or 7d")),
    ("net on a binary metric", metrics("metrics: [{name: purchase, net: true}]"),
     ("bad.yaml:7:33", "metrics[0].net", "revenue metrics only")),
    ("negative values for a binary metric", metrics("metrics: [{name: purchase, allow_negative: true}]"),
     ("metrics[0].allow_negative", "revenue metrics only")),
    ("margin on the primary metric", metrics("metrics: [{name: purchase, margin: 0.1}]"),
     ("bad.yaml:7:36", "metrics[0].margin", "guardrail metrics only")),
    ("unknown role", metrics("metrics: [{name: purchase, role: main}]"), ("bad.yaml:7:34", "metrics[0].role")),
    ("negative margin", metrics(f"metrics: [{{name: purchase}}, {GUARDRAIL.replace('0.2', '-1')}]"),
     ("metrics[1].margin", "greater than 0")),
    ("a fall of 100% or more", metrics("metrics: [{name: purchase}, {name: opens, role: guardrail, direction: "
                                       "increase, margin: 1.5}]"), ("metrics[1].margin", "below 1")),
    ("unknown analysis unit", edit("analysis: {control: control}", "analysis: {control: control, unit: person}"),
     ("bad.yaml:12:36", "analysis.unit", "'user' or 'decision'")),
    ("covariate not an attribute name", edit("analysis: {control: control}",
                                             "analysis: {control: control, covariate: 'spend 90d'}"),
     ("bad.yaml:12:41", "analysis.covariate", "should match pattern")),
    ("covariate as a number", edit("analysis: {control: control}", "analysis: {control: control, covariate: 7}"),
     ("bad.yaml:12:41", "analysis.covariate")),
    ("covariate on a bandit", edit("kind: ab_test", "kind: bandit\npolicy: {name: thompson}").replace(
        "{control: control}", "{control: control, covariate: spend}"),
     ("bad.yaml:13:41", "analysis.covariate", "a bandit is read on its posteriors")),
    ("covariate per decision", edit("analysis: {control: control}",
                                    "analysis: {control: control, unit: decision, covariate: spend}"),
     ("bad.yaml:12:", "analysis.covariate", "needs analysis.unit: user")),
    ("negative arm cost", edit(ARM0, ARM0[:-1] + ", cost: -1}"),
     ("bad.yaml:10:97", "arms[0].cost", "greater than or equal to 0")),
]


def analysis(extra: str, metric: str = "binary") -> str:
    """BAD with `extra` in its analysis block (line 12; `extra` starts at column 30)."""
    text = edit("analysis: {control: control}", f"analysis: {{control: control, {extra}}}")
    return text if metric == "binary" else text.replace("{name: purchase, type: binary}",
                                                        "{name: revenue, type: revenue}")


# Declared planning baselines (line 12 of BAD holds the analysis block).
BASELINE_CASES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("baseline rate of 1 or more", analysis("baseline: 1.5"), ("bad.yaml:12:40", "analysis.baseline", "less than 1")),
    ("baseline rate of 0", analysis("baseline: 0"), ("bad.yaml:12:40", "analysis.baseline", "greater than 0")),
    ("NaN baseline", analysis("baseline: .nan"), ("bad.yaml:12:40", "analysis.baseline", "NaN and infinity")),
    ("baseline_mean on a binary metric", analysis("baseline_mean: 5, baseline_sd: 2"),
     ("bad.yaml:12:45", "analysis.baseline_mean", "revenue primary metric", "analysis.baseline_sd")),
    ("baseline on a revenue metric", analysis("baseline: 0.1", "revenue"),
     ("bad.yaml:12:40", "analysis.baseline", "binary primary metric", "baseline_mean and analysis.baseline_sd")),
    ("baseline_mean without baseline_sd", analysis("baseline_mean: 5", "revenue"),
     ("bad.yaml:12:45", "analysis.baseline_mean", "needs analysis.baseline_sd too")),
    ("baseline_sd without baseline_mean", analysis("baseline_sd: 2", "revenue"),
     ("bad.yaml:12:43", "analysis.baseline_sd", "needs analysis.baseline_mean too")),
    ("baseline_sd of 0", analysis("baseline_mean: 5, baseline_sd: 0", "revenue"),
     ("analysis.baseline_sd", "greater than 0")),
    ("infinite baseline_mean", analysis("baseline_mean: .inf, baseline_sd: 2", "revenue"),
     ("bad.yaml:12:45", "analysis.baseline_mean", "NaN and infinity")),
    ("baseline on a bandit", analysis("baseline: 0.1").replace("kind: ab_test", "kind: bandit"),
     ("bad.yaml:12:40", "analysis.baseline", "ab_test experiments only")),
]


# (id, content of bad.yaml, places the message must name). Line numbers are those of BAD.
INVALID: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("wrong type", edit("coverage: 1.0", "coverage: lots"), ("bad.yaml:8:21", "traffic.coverage")),
    ("wrong type: mapping for text", edit("name: Landing page test", "name: {a: 1}"), ("bad.yaml:3:1", "name")),
    ("unknown top-level key", edit("kind: ab_test", "kind: ab_test\nkindd: x"), ("bad.yaml:7:1", "kindd", "unknown")),
    ("unknown nested key", edit("{coverage: 1.0}", "{coverage: 1.0, sed: x}"), ("bad.yaml:8:26", "traffic.sed")),
    ("duplicate key", edit("kind: ab_test", "kind: ab_test\nkind: bandit"), ("bad.yaml:7:1", "kind", "duplicate")),
    ("duplicate nested key", edit("{coverage: 1.0}", "{coverage: 1.0, coverage: 0.5}"),
     ("bad.yaml:8:26", "traffic.coverage", "duplicate")),
    ("tab indentation", edit(ARM0, "\t" + ARM0.strip()), ("bad.yaml:10:1", "invalid YAML")),
    ("bad indentation", edit("analysis: {control: control}", "analysis:\n  control: control\n   alpha: 0.1"),
     ("bad.yaml:14:9", "invalid YAML")),
    ("unclosed flow mapping", edit("{coverage: 1.0}", "{coverage: 1.0"), ("bad.yaml:9:", "invalid YAML")),
    ("unclosed quote", edit("name: Landing page test", 'name: "Landing'), ("bad.yaml:", "invalid YAML")),
    ("empty file", "", ("bad.yaml:1:1", "empty")),
    ("comments only", "# nothing yet\n", ("bad.yaml:1:1", "empty")),
    ("a list instead of a mapping", "- key: x\n- key: y\n", ("bad.yaml:1:1", "mapping")),
    ("a scalar instead of a mapping", "just text\n", ("bad.yaml:1:1", "mapping")),
    ("missing required field", edit("owner: growth@example.com\n", ""), ("bad.yaml:1:1", "owner", "missing")),
    ("unknown enum value", edit("status: running", "status: live"), ("bad.yaml:5:9", "status")),
    ("huge float", edit("coverage: 1.0", "coverage: 1e400"), ("bad.yaml:8:21", "traffic.coverage", "finite")),
    ("huge integer", edit("analysis: {control: control}", "analysis: {control: control, min_sample_per_arm: "
                          "123456789012345678901234567890}"), ("bad.yaml:12:50", "analysis.min_sample_per_arm",
                                                               "64-bit")),
    ("integer with 5000 digits", edit("coverage: 1.0", "coverage: " + "9" * 5000), ("bad.yaml:8:21", "invalid YAML")),
    ("NaN weight", edit(ARM0, ARM0.replace("weight: 0.5", "weight: .nan")), ("bad.yaml:10:86", "arms[0].weight")),
    ("negative weight", edit(ARM0, ARM0.replace("weight: 0.5", "weight: -0.5")), ("bad.yaml:10:86", "arms[0].weight")),
    ("weights do not add up", edit(ARM0, ARM0.replace("weight: 0.5", "weight: 0.9")), ("bad.yaml:9:1", "arms",
                                                                                      "add up to 1")),
    ("weight on one arm only", edit(ARM0, ARM0.replace(", weight: 0.5", "")), ("bad.yaml:10:5", "arms[0].weight")),
    ("unknown default arm", edit("analysis:", "default_arm: nobody\nanalysis:"), ("bad.yaml:12:14", "default_arm")),
    ("control not an arm", edit("{control: control}", "{control: nobody}"), ("bad.yaml:12:21", "analysis.control")),
    ("duplicate arm key", edit("{key: curated", "{key: control"), ("bad.yaml:11:11", "arms[1].key")),
    ("one arm only", edit(ARM1 + "\n", ""), ("bad.yaml:9:1", "arms")),
    ("bad key characters", edit("key: bad-one", "key: Bad One!"), ("bad.yaml:2:6", "key")),
    ("very long key", edit("key: bad-one", "key: " + "k" * 300), ("bad.yaml:2:6", "key")),
    ("very long unknown key", edit("kind: ab_test", "kind: ab_test\n" + "x" * 2000 + ": 1"),
     ("bad.yaml:7:2001", "invalid YAML")),
    ("NUL character in the file", edit("Landing", "Land\x00ing"), ("bad.yaml:3:11", "#x0000")),
    ("escaped NUL in text", edit("name: Landing page test", 'name: "Land\\0ing"'), ("bad.yaml:3:7", "name", "NUL")),
    ("control character", edit("Landing", "Land\x1bing"), ("bad.yaml:3:11", "#x001b")),
    ("latin-1 byte", edit("Landing", "Landing").encode().replace(b"Landing", b"Land\xe9ing"),
     ("bad.yaml:3:11", "not UTF-8")),
    ("UTF-16 file", BAD.encode("utf-16"), ("bad.yaml:1:1", "not UTF-8")),
    ("binary file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("bad.yaml:1:1", "not UTF-8")),
    ("alias bomb", laughs(), ("bad.yaml:", "aliases expand")),
    ("recursive alias", edit("analysis: {control: control}", "analysis: &a {control: [*a]}"),
     ("bad.yaml:12:11", "recursive alias")),
    ("undefined alias", edit("coverage: 1.0", "coverage: *nowhere"), ("bad.yaml:8:21", "undefined alias")),
    ("merge of a scalar", edit("{coverage: 1.0}", "{<<: 5, coverage: 1.0}"), ("bad.yaml:8:", "merging")),
    ("python object tag", edit("kind: ab_test", "kind: !!python/object:os.system {}"),
     ("bad.yaml:6:7", "could not determine a constructor")),
    ("python apply tag", "!!python/object/apply:os.system ['true']\n", ("bad.yaml:1:1", "constructor")),
    ("custom tag", edit("status: running", "status: !env RUNNING"), ("bad.yaml:5:9", "constructor")),
    ("multi-document stream", BAD + "---\n" + BAD, ("bad.yaml:13:1", "single document")),
    ("nested 600 levels", payload("[" * 600 + "]" * 600), ("bad.yaml:11:", "nested deeper than 32")),
    ("block nesting 600 levels", "".join(" " * i + f"k{i}:\n" for i in range(600)), ("bad.yaml:33:",
                                                                                      "nested deeper")),
    ("20,000 unknown keys", BAD + "".join(f"k{i}: 1\n" for i in range(20_000)),
     ("bad.yaml:13:1: k0", "more problem(s)")),
    ("payload integer above 64 bits", payload("1234567890123456789012345678901"),
     ("bad.yaml:11:", "arms[1].payload.v", "64-bit")),
    ("payload binary", payload("!!binary aGVsbG8="), ("bad.yaml:11:", "arms[1].payload.v", "binary")),
    ("payload date", payload("2024-01-01"), ("bad.yaml:11:", "arms[1].payload.v", "date")),
    ("payload impossible date", payload("2024-13-01"), ("bad.yaml:11:", "timestamp")),
    ("payload set", payload("!!set {a, b}"), ("bad.yaml:11:", "arms[1].payload.v", "set")),
    ("payload infinity", payload(".inf"), ("bad.yaml:11:", "arms[1].payload.v", "infinity")),
    ("boolean key", edit("kind: ab_test", "kind: ab_test\nyes: 1"), ("bad.yaml:7:1", "keys must be text: quote 'yes'")),
    ("bandit with the fixed policy", edit("kind: ab_test", "kind: bandit"), ("bad.yaml:1:1: policy.name",)),
    ("oversized file", BAD + "# " + "x" * (1024 * 1024) + "\n", ("bad.yaml", "larger than")),
]


def symlink_loop(d: Path, _: pytest.MonkeyPatch) -> None:
    (d / "bad.yaml").symlink_to(d / "bad.yaml")


def directory(d: Path, _: pytest.MonkeyPatch) -> None:
    (d / "bad.yaml").mkdir()


def unreadable(d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = d / "bad.yaml"
    path.write_text(BAD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: stand in for the file the same way the OS would
        original = Path.open

        def refuse(self: Path, *args: object, **kwargs: object) -> object:
            if self.absolute() == path:
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "open", refuse)


SETUPS: list[tuple[str, Callable[[Path, pytest.MonkeyPatch], None], tuple[str, ...]]] = [
    ("symlink loop", symlink_loop, ("bad.yaml: cannot read", "symbolic links")),
    ("a directory named .yaml", directory, ("bad.yaml: cannot read", "directory")),
    ("unreadable file", unreadable, ("bad.yaml: cannot read", "Permission denied")),
]

# Odd but valid: (id, content). They are accepted beside the good file.
VALID: list[tuple[str, str | bytes]] = [
    ("byte order mark", "\ufeff" + BAD),
    ("CRLF line ends", BAD.replace("\n", "\r\n")),
    ("BOM and CRLF", ("\ufeff" + BAD.replace("\n", "\r\n")).encode()),
    ("aliases", edit(ARM0, ARM0.replace("{key", "&a0 {key")).replace(ARM1, "  - {<<: *a0, key: curated, campaign: c}")),
    ("no final newline", BAD.rstrip("\n")),
    ("explicit document markers", "---\n" + BAD + "...\n"),
    ("quoted date in payload", payload("'2024-01-01'")),
    ("unicode text", edit("name: Landing page test", "name: Lándïng 页面 😀")),
    ("declared baseline rate", analysis("baseline: 0.05")),
    ("declared revenue baseline", analysis("baseline_mean: 4.5, baseline_sd: 12", "revenue")),
]

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "good.yaml").write_text(BANDIT_YAML)
    return tmp_path / "experiments"


def write(d: Path, content: str | bytes) -> None:
    path = d / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def check_refused(d: Path, places: tuple[str, ...]) -> None:
    """validate and apply --dry-run exit 2 naming the places; validate still reports the good file."""
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2, result.output
    assert_no_traceback(result.output)
    assert_names(result.output, *places, "1 experiment(s) valid: channels")
    for line in result.output.splitlines()[1:]:
        assert line.startswith("experiments/bad.yaml"), line
    result = runner.invoke(app, ["apply", "--dry-run", "--db", f"sqlite:///{d.parent / 'store.db'}"])
    assert result.exit_code == 2, result.output
    assert_no_traceback(result.output)
    assert_names(result.output, *places)


@pytest.mark.parametrize(("content", "places"), [r[1:] for r in INVALID + METRIC_CASES + BASELINE_CASES],
                         ids=[r[0] for r in INVALID + METRIC_CASES + BASELINE_CASES])
def test_invalid_files_are_refused_naming_the_place(workdir: Path, content: str | bytes,
                                                    places: tuple[str, ...]) -> None:
    write(workdir, content)
    check_refused(workdir, places)


@pytest.mark.parametrize(("setup", "places"), [r[1:] for r in SETUPS], ids=[r[0] for r in SETUPS])
def test_files_that_cannot_be_read_are_named(workdir: Path, setup: Callable[[Path, pytest.MonkeyPatch], None],
                                             places: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    setup(workdir, monkeypatch)
    check_refused(workdir, places)


@pytest.mark.parametrize("content", [r[1] for r in VALID], ids=[r[0] for r in VALID])
def test_odd_but_valid_files_are_accepted(workdir: Path, content: str | bytes) -> None:
    write(workdir, content)
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert_names(result.output, "2 experiment(s) valid: ")
    result = runner.invoke(app, ["apply", "--dry-run", "--db", f"sqlite:///{workdir.parent / 'store.db'}"])
    assert result.exit_code == 0, result.output
    assert_names(result.output, "create    bad-one", "create    channels", "dry run: nothing applied")
