"""`crosspromo evaluate` and `crosspromo export-log`: off-policy evaluation of a decision log.

Log format (CSV, header required): `arm`, `reward`, `propensity`, optional `unit` and
`timestamp`, and context columns `ctx_<attribute>` (lists as comma-separated values). Other
columns are refused (typos must not pass silently). `export-log` neutralises cells a
spreadsheet would run as formulas (OWASP, "CSV injection"): a unit or context cell that
starts with = + - @, a tab or a carriage return, or with a single quote, gets a single quote
in front; `read_log` removes one leading quote, so an exported log reads back exactly. A bad
row (propensity not in (0, 1], unknown arm, reward not a finite number, NaN or infinite
values) is reported as `FILE:LINE: reason` and skipped; good rows are kept.

Policies evaluated on the log (policies/ope.py has the estimators):

- `context_free`: the experiment's bandit weights computed from the log's per-arm sums;
- `targeted`: those weights blended with the recommender's scores for each row's unit and
  context, exactly as `decide` does (policies/targeting.py), with the experiment's
  `targeting:` block, else the one given on the command line (default: hybrid at 0.5, segments
  from every `ctx_` column except the eligibility attributes) — so a team can judge
  targeting on its own history before switching it on;
- `social` (when a social graph is given): the same blend with the `social` recommender
  (LightGCN over the graph and the log's conversions), at the targeting's strength,
  temperature and layers — so a team can judge the social signal on its own history;
- `logging`: the policy that produced the log (its mean reward).

Both fitted policies are *cross-fitted* (Chernozhukov et al. 2018, "Double/debiased machine
learning"): rows are split at random (seeded) into two folds, and each fold is evaluated with
policies and a reward model fitted on the other, so no row judges a policy it trained. A
unit's rows in the other fold are its history (their order is ignored). The DR reward model
predicts a row's reward on every arm as the mean reward of its (segment, arm) cell in the
other fold, shrunk towards the arm's mean by empirical Bayes (policies/shrinkage.py); rows
without segment attributes form one more cell. Eligibility (`ctx_` + the experiment's
`channels_from` / `exclude_arms_from`) restricts both policies as in `decide`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from engine.measures import MetricType
from engine.spec import ExperimentSpec, Recommender, Targeting, declared_policy
from engine.store import Store, StoredGraph
from engine.targeting import HistoryRow, fit_targeting
from policies.bandits.arm_stats import stats_from_sums
from policies.bandits.choice import eligible_weights_per_unit
from policies.sufficient import ArmStats
from policies.targeting.blend import blend_per_unit
from policies.targeting.ope import ESTIMATORS, LoggedData, PolicyValue, evaluate_policies, is_uniform_logging
from policies.targeting.shrinkage import shrunk_means

REQUIRED = ("arm", "reward", "propensity")
OPTIONAL = ("unit", "timestamp")
CONTEXT_PREFIX = "ctx_"
FOLDS = 2
POLICIES = ("targeted", "social", "context_free", "logging")


@dataclass(frozen=True)
class LogRow:
    line: int
    arm: int
    reward: float
    propensity: float
    unit: str | None
    context: dict[str, Any]


def _finite(text: str | None, name: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: not a number ({text!r})") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite (NaN and Infinity are refused)")
    return value


# Cells a spreadsheet would evaluate; a leading quote is escaped too, so unquoting is exact.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise(cell: str) -> str:
    """`cell` as written to a CSV log: a single quote in front if it could run as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def unneutralise(cell: str) -> str:
    """The value `neutralise` wrote as `cell`."""
    return cell[1:] if cell.startswith("'") else cell


def _context_value(text: str) -> Any:
    text = unneutralise(text)
    return [v.strip() for v in text.split(",") if v.strip()] if "," in text else text


def read_log(path: Path, spec: ExperimentSpec) -> tuple[list[LogRow], list[tuple[int, str]]]:
    """Good rows and (line, reason) of the bad ones. Raises ValueError for a bad header or a
    file that is not UTF-8 CSV."""
    arms = {a: i for i, a in enumerate(spec.arm_keys)}
    try:
        return _read_rows(path, arms, spec.key)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start} of a block cannot be decoded)") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a CSV file ({exc})") from None


def _read_rows(path: Path, arms: dict[str, int], key: str) -> tuple[list[LogRow], list[tuple[int, str]]]:
    rows: list[LogRow] = []
    problems: list[tuple[int, str]] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        unknown = [c for c in header if c not in REQUIRED + OPTIONAL and not c.startswith(CONTEXT_PREFIX)]
        if missing or unknown:
            raise ValueError(f"{path}: " + "; ".join(
                ([f"missing column(s) {', '.join(missing)}"] if missing else [])
                + ([f"unknown column(s) {', '.join(unknown)} (context columns start with ctx_)"] if unknown else [])))
        for raw in reader:
            line = reader.line_num
            try:
                if None in raw:
                    raise ValueError("more fields than the header names")
                arm = raw["arm"]
                if arm not in arms:
                    raise ValueError(f"arm: {arm!r} is not an arm of {key!r}")
                reward = _finite(raw["reward"], "reward")
                propensity = _finite(raw["propensity"], "propensity")
                if not 0 < propensity <= 1:
                    raise ValueError(f"propensity: must be in (0, 1], got {propensity:g}")
            except ValueError as exc:
                problems.append((line, str(exc)))
                continue
            context = {k[len(CONTEXT_PREFIX):]: _context_value(v) for k, v in raw.items()
                       if k.startswith(CONTEXT_PREFIX) and v}
            unit = unneutralise(raw.get("unit") or "") or None
            rows.append(LogRow(line, arms[arm], reward, propensity, unit, context))
    return rows, problems


def evaluation_targeting(spec: ExperimentSpec, rows: Sequence[LogRow], recommender: Recommender | None,
                         strength: float | None) -> Targeting:
    """The targeting to evaluate: the declared one, with command-line overrides; else a default."""
    declared = spec.targeting
    if declared is None or declared.recommender is Recommender.NONE:
        eligibility = {spec.eligibility.channels_from, spec.eligibility.exclude_arms_from}
        attributes = (declared.segments_from if declared is not None and declared.segments_from
                      else tuple(sorted({k for r in rows for k in r.context} - eligibility)))
        declared = Targeting(recommender=Recommender.HYBRID, segments_from=attributes)
    changes: dict[str, Any] = {}
    if recommender is not None:
        changes["recommender"] = recommender
        if recommender is not Recommender.HYBRID:
            changes |= {"cf_weight": None, "content_weight": None, "social_weight": None}
    if strength is not None:
        changes["strength"] = strength
    return Targeting.model_validate(declared.model_dump() | changes)


def social_targeting(targeting: Targeting) -> Targeting:
    """`targeting` with the social recommender in place of its own (same strength and temperature)."""
    return Targeting.model_validate(targeting.model_dump() | {
        "recommender": Recommender.SOCIAL, "cf_weight": None, "content_weight": None, "social_weight": None})


def _masks(spec: ExperimentSpec, rows: Sequence[LogRow]) -> np.ndarray:
    channels = np.array([a.channel.value for a in spec.arms])
    masks = np.ones((len(rows), len(spec.arms)), dtype=bool)
    for i, r in enumerate(rows):
        if (mask := spec.eligibility.mask(spec.arm_keys, channels, r.context)) is not None:
            masks[i] = mask
    masks[~masks.any(axis=1)] = True  # the logged arm was served anyway: no rule can have applied
    return masks


def _arm_stats(spec: ExperimentSpec, arms: np.ndarray, rewards: np.ndarray) -> list[ArmStats]:
    k = len(spec.arms)
    values = rewards if spec.primary.type is MetricType.REVENUE else (rewards > 0).astype(float)
    return stats_from_sums(spec.primary.type.value, np.bincount(arms, minlength=k).astype(float),
                           np.bincount(arms, values, minlength=k), np.bincount(arms, values**2, minlength=k))


def _context_free_weights(spec: ExperimentSpec, stats: list[ArmStats], rng: np.random.Generator) -> np.ndarray:
    policy = declared_policy(spec, whole_log=True)  # the whole log is one window
    return np.asarray(spec.weights, dtype=float) if policy is None else policy.weights(stats, rng)


@dataclass(frozen=True)
class Evaluation:
    experiment: str
    rows: int
    skipped: int
    uniform_logging: bool
    targeting: Targeting
    resamples: int
    seed: int
    values: dict[str, PolicyValue] = field(default_factory=dict)

    @property
    def policies(self) -> list[str]:
        """The policies evaluated, in the order of POLICIES (`social` only with a graph)."""
        return [name for name in POLICIES if name in self.values]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: {e: (None if (v := self.values[name].estimates[e]) is None
                       else {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high}) for e in ESTIMATORS}
            for name in self.policies
        }
        out["diagnostics"] = {name: {"effective_sample_size": self.values[name].effective_sample_size,
                                     "max_weight": self.values[name].max_weight} for name in self.policies}
        out["log"] = {"experiment": self.experiment, "rows": self.rows, "skipped": self.skipped,
                      "uniform_logging": self.uniform_logging, "folds": FOLDS, "resamples": self.resamples,
                      "seed": self.seed, "interval": "95% percentile bootstrap over rows",
                      "targeting": self.targeting.model_dump(mode="json")}
        return out


def evaluate_log(spec: ExperimentSpec, rows: Sequence[LogRow], targeting: Targeting, *, seed: int = 0,
                 resamples: int = 1000, skipped: int = 0, graph: StoredGraph | None = None) -> Evaluation:
    """Replay, IPS, SNIPS and DR for the targeted, context-free and logging policies, and the
    social one when `graph` is given (module doc)."""
    if len(rows) < 2 * FOLDS:
        raise ValueError(f"need at least {2 * FOLDS} good rows to cross-fit, got {len(rows)}")
    k = len(spec.arms)
    arms = np.array([r.arm for r in rows], dtype=np.intp)
    rewards = np.array([r.reward for r in rows])
    log = LoggedData(arms, rewards, np.array([r.propensity for r in rows]), k)
    masks = _masks(spec, rows)
    fold_rng, fit_rng, ope_rng = np.random.default_rng(seed).spawn(3)
    fold = fold_rng.permutation(len(rows)) % FOLDS
    fitted = {"targeted": targeting} | ({"social": social_targeting(targeting)} if graph is not None else {})
    targets = {name: np.zeros((len(rows), k)) for name in fitted}
    context_free, reward_model = np.zeros((2, len(rows), k))
    units = [r.unit if r.unit is not None else f"line-{r.line}" for r in rows]
    for f in range(FOLDS):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        weights = _context_free_weights(spec, _arm_stats(spec, arms[train], rewards[train]), fit_rng)
        context_free[test] = eligible_weights_per_unit(weights, masks[test])
        history = [HistoryRow(units[i], rows[i].arm, rows[i].reward > 0, rows[i].context) for i in train]
        for name, chosen in fitted.items():
            model = fit_targeting(spec, chosen, history, fit_rng, graph=graph if chosen.uses_graph else None)
            segment = np.array([-1 if (s := model.segment_of(r.context)) is None else s for r in rows], dtype=np.intp)
            known = np.array([model.units.get(units[i], -1) for i in test], dtype=np.intp)
            scores, _ = model.recommender.scores_many(known, segment[test])
            targets[name][test], _ = blend_per_unit(weights, scores, masks[test], chosen.strength, chosen.temperature)
            if name == "targeted":
                reward_model[test] = _reward_model(segment, arms, rewards, train, k)[segment[test]]
    uniform = is_uniform_logging(log, masks.sum(axis=1))
    values = evaluate_policies(log, {**targets, "context_free": context_free, "logging": None},
                               reward_model, ope_rng, uniform=uniform, resamples=resamples)
    return Evaluation(spec.key, len(rows), skipped, uniform, targeting, resamples, seed, values)


def _reward_model(segment: np.ndarray, arms: np.ndarray, rewards: np.ndarray, train: np.ndarray, k: int) -> np.ndarray:
    """Shrunk mean reward per (segment, arm) from the `train` rows; row -1 (last) is 'no segment'."""
    cells = int(segment.max()) + 2
    cell = np.where(segment[train] >= 0, segment[train], cells - 1) * k + arms[train]
    size = cells * k
    counts = np.bincount(cell, minlength=size).reshape(cells, k).astype(float)
    totals = np.bincount(cell, rewards[train], minlength=size).reshape(cells, k)
    totals_sq = np.bincount(cell, rewards[train] ** 2, minlength=size).reshape(cells, k)
    return shrunk_means(totals, counts, totals_sq).means


def render_evaluation(evaluation: Evaluation, console: Console) -> None:
    data = evaluation.to_dict()
    table = Table(title=f"{evaluation.experiment}: off-policy evaluation of {evaluation.rows:,} logged decisions")
    for column in ("policy", "estimator", "value", "95% interval", "eff. sample"):
        table.add_column(column, justify="left" if column in ("policy", "estimator") else "right")
    for name in evaluation.policies:
        ess = f"{data['diagnostics'][name]['effective_sample_size']:,.0f}"
        for estimator in ESTIMATORS:
            v = data[name][estimator]
            cells = ("–", "not applicable (logging is not uniform)") if v is None else (
                f"{v['value']:.5g}", f"[{v['ci_low']:.5g}, {v['ci_high']:.5g}]")
            table.add_row(name, estimator, *cells, ess)
    console.print(table)


def export_log(store: Store, spec: ExperimentSpec, out: Path) -> int:
    """Write the experiment's current-phase decisions that have a propensity as an evaluate log.

    reward: 1/0 converted for a binary metric, the summed value for revenue; context lists are
    comma-joined. Imported exposures (no propensity) are left out. Two streamed passes over the
    decisions (the first collects the context attributes), so exports of any size fit in memory.
    Returns the number of rows written."""
    attributes = sorted({k for r in store.decision_log(spec.key, spec.traffic.phase) if r.context_json
                         for k in json.loads(r.context_json)})
    revenue = spec.primary.type is MetricType.REVENUE
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # mkdir would say "File exists", which names no problem
        raise ValueError(f"--out {out}: {blocking} is a file, not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*REQUIRED, *OPTIONAL, *(CONTEXT_PREFIX + a for a in attributes)])
        for r in store.decision_log(spec.key, spec.traffic.phase):
            context = json.loads(r.context_json) if r.context_json else {}
            reward = r.value if revenue else int(bool(r.converted))
            writer.writerow([r.arm, reward, repr(float(r.propensity)), neutralise(r.unit or ""), r.ts.isoformat(),
                             *(neutralise(_cell(context.get(a))) for a in attributes)])
            written += 1
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
