"""The promotion gate: which candidate, if any, may replace persistence in production.

A gate is a statistical procedure, and its error rate is measured, not assumed
(``benchmarks/bench_gate.py`` runs it on simulated random walks and planted signals).
A candidate (every learned model: Lasso, XGBoost, the River online model) is
**promotable** only if all of these hold:

* **significant after correcting for the number of candidates**: its one-sided
  Diebold–Mariano p-value on the pooled out-of-sample losses of every walk-forward
  fold, Holm–Bonferroni-adjusted over *all* candidates, is below ``alpha``. Testing
  the best of three at 5 % would promote noise up to three times as often;
* **consistent**: its MAE beats persistence's in more than half of the folds (one
  lucky stretch is not an edge);
* **large enough**: pooled skill = 1 - MAE/MAE_persistence >= ``min_skill`` (an effect
  size: a detectable but negligible edge is not worth a model in production);
* **not a constant**: a model whose final fit predicts the same return for every row
  (Lasso with no non-zero coefficient, XGBoost without a split) is a drift bet, not a
  model of the features; it is flagged and never promoted.

Among the promotable candidates the one with the lowest pooled MAE is promoted.

>>> cands = [Candidate("lasso", 0.001, 0.02, 3, 3, False), Candidate("xgboost", 0.03, 0.01, 2, 3, False),
...          Candidate("online", 0.2, -0.001, 1, 3, False)]
>>> [(d.name, d.p_holm, d.promotable) for d in decide(cands, GateConfig(alpha=0.05, min_skill=0.005))]
[('lasso', 0.003, True), ('xgboost', 0.06, False), ('online', 0.2, False)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.evaluation import holm
from tickcast.config import Settings

# Default minimum skill (1 - MAE/MAE_persistence) a promoted model must reach, i.e.
# TICKCAST_MIN_SKILL's default: chosen from benchmarks/bench_gate.py (README, Training).
DEFAULT_MIN_SKILL: float = Settings.min_skill


@dataclass(frozen=True)
class GateConfig:
    alpha: float = 0.05  # family-wise error rate over the candidates
    min_skill: float = DEFAULT_MIN_SKILL


@dataclass(frozen=True)
class Candidate:
    name: str
    p_value: float  # one-sided DM p on the pooled out-of-sample losses (small = better than persistence)
    skill: float  # pooled 1 - MAE/MAE_persistence
    folds_better: int  # folds in which its MAE is below persistence's
    n_folds: int
    constant: bool  # its final fit predicts the same return for every row


@dataclass(frozen=True)
class Decision:
    name: str
    p_value: float
    p_holm: float
    significant: bool
    folds_better: int
    n_folds: int
    consistent: bool
    skill: float
    min_skill: float
    large_enough: bool
    constant: bool
    promotable: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def folds_needed(n_folds: int) -> int:
    """A strict majority of the folds."""
    return n_folds // 2 + 1


def decide(candidates: list[Candidate], cfg: GateConfig) -> list[Decision]:
    """One decision per candidate (same order), with the reason in words."""
    adjusted = holm([c.p_value for c in candidates])
    out = []
    for c, p_adj in zip(candidates, adjusted, strict=True):
        need = folds_needed(c.n_folds)
        significant = p_adj < cfg.alpha
        consistent = c.folds_better >= need
        large = c.skill >= cfg.min_skill
        checks = [
            (significant, f"Holm-adjusted DM p = {p_adj:.3g} " + ("<" if significant else ">=") + f" {cfg.alpha}"),
            (consistent, f"beats persistence in {c.folds_better} of {c.n_folds} folds"
             + ("" if consistent else f" (needs {need})")),
            (large, f"skill {c.skill:.4f} " + (">=" if large else "<") + f" minimum {cfg.min_skill:g}"),
        ]
        if c.constant:
            checks.insert(0, (False, "degenerate: predicts a constant return (no non-zero coefficient / no split)"))
        ok = all(passed for passed, _ in checks)
        if ok:
            reason = "promotable: " + "; ".join(text for _, text in checks)
        else:
            reason = "not promotable: " + "; ".join(text for passed, text in checks if not passed)
        out.append(Decision(c.name, c.p_value, p_adj, significant, c.folds_better, c.n_folds, consistent,
                            c.skill, cfg.min_skill, large, c.constant, ok, reason))
    return out
