"""``rayfolio plan``: the probability of reaching a financial goal with a strategy, the monthly
contribution a target probability needs and the years needed (rl/planning.py's Monte Carlo on the
run's backtested daily net returns); the same answer as ``POST /v1/plans`` for the same inputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The flag that sets each field of the plan: errors name what the user typed.
FLAGS = {"initial_wealth": "--initial", "goal": "--goal", "horizon_years": "--horizon-years",
         "monthly_contribution": "--monthly", "target_probability": "--target-probability", "paths": "--paths",
         "seed": "--seed", "block_length": "--block-length", "max_monthly_contribution": "--max-monthly"}  # fmt: skip


def register(commands) -> None:
    plan = commands.add_parser(
        "plan",
        help="goal planning: the chance of reaching a goal, the contribution and years it needs",
        description="Monte Carlo by stationary block bootstrap of a strategy's backtested daily net returns "
        "(the run's returns.parquet): the probability that wealth reaches the goal at the horizon (95%% "
        "interval), terminal-wealth percentiles, the monthly contribution that reaches the target probability "
        "and the whole years needed at the given contribution (within 40). Contributions are paid at each "
        "month's end; a month is 21 trading days. The same seed gives the same answer.",
    )
    plan.add_argument("--goal", type=float, required=True, help="the wealth to reach")
    plan.add_argument("--horizon-years", type=float, required=True,
                      help="years to the goal, 1/12 to 40 (fractions round to whole months)")  # fmt: skip
    plan.add_argument("--initial", type=float, default=0.0, help="wealth today (default 0)")
    plan.add_argument("--monthly", type=float, default=0.0, help="contribution at each month's end (default 0)")
    plan.add_argument("--strategy", default="balanced",
                      help="a served profile (cautious, balanced, aggressive) or a backtested strategy, e.g. "
                      "equal_weight (default: balanced)")  # fmt: skip
    plan.add_argument("--target-probability", type=float, default=0.8, help="in (0, 1); default 0.8")
    plan.add_argument("--max-monthly", type=float, default=None,
                      help="the most one can pay in a month (default: the goal, which always suffices)")  # fmt: skip
    plan.add_argument("--run-dir", type=Path,
                      help="run directory with the backtest's returns.parquet (default: the config's run directory, "
                      "runs/quickstart)")  # fmt: skip
    plan.add_argument("--config", type=Path, help="run config naming runs/<name> (default: the built-in quickstart)")
    plan.add_argument("--paths", type=int, default=10_000, help="Monte Carlo paths, 100 to 100,000 (default 10000)")
    plan.add_argument("--block-length", type=float, default=21.0, help="mean bootstrap block in days (default 21)")
    plan.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (the API's response)")
    plan.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.rl.planning import PlanError, PlanSpec, load_histories, plan

    try:
        spec = PlanSpec(initial_wealth=args.initial, goal=args.goal, horizon_years=args.horizon_years,
                        monthly_contribution=args.monthly, target_probability=args.target_probability,
                        paths=args.paths, block_length=args.block_length, seed=args.seed,
                        max_monthly_contribution=args.max_monthly)  # fmt: skip
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"{FLAGS.get(str(first['loc'][0]), first['loc'][0])}: {first['msg']}") from None
    path = (args.run_dir or load_config(args.config).run_dir) / "returns.parquet"
    if not path.is_file():
        raise ConfigError(f"{path}: no backtest returns to plan with; run `rayfolio run` (or name --run-dir)")
    try:
        histories = load_histories(path)
        if args.strategy not in histories:
            raise PlanError(f"--strategy: {args.strategy!r} is not in {path}; choose one of: {', '.join(histories)}")
        result = plan(histories[args.strategy], spec)
    except PlanError as err:
        raise ConfigError(str(err)) from None
    if args.json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    print(summary(result, spec))


def summary(result, spec) -> str:
    """The plan as a few lines a person reads."""
    lo, hi = result.probability_ci
    prov = result.provenance
    tw = result.terminal_wealth
    needed = (f"{result.required_monthly_contribution:,.2f} a month" if result.reachable
              else f"not reachable with at most {result.contribution_cap:,.2f} a month")  # fmt: skip
    years = "over 40 years" if result.years_needed is None else f"{result.years_needed} years"
    rows = [("5th", tw.p5), ("25th", tw.p25), ("median", tw.p50), ("75th", tw.p75), ("95th", tw.p95)]
    return "\n".join([
        f"Goal {spec.goal:,.2f} in {prov.months / 12:g} years from {spec.initial_wealth:,.2f}, "
        f"contributing {spec.monthly_contribution:,.2f} a month, with {prov.strategy}:",
        f"  probability of reaching it  {result.probability:.1%}  (95% interval {lo:.1%} to {hi:.1%})",
        f"  to reach it with {result.target_probability:.0%}: {needed}",
        f"  at {spec.monthly_contribution:,.2f} a month, {result.target_probability:.0%} is reached in: {years}",
        "  wealth at the horizon:",
        *(f"    {name:>7}  {value:>18,.2f}" for name, value in rows),
        f"  {prov.paths} paths x {prov.months} months, stationary block bootstrap (mean block {prov.block_length:g} "
        f"days) of {prov.days} days, {prov.data_start} to {prov.data_end}, seed {prov.seed}",
        "",
        result.caveat,
    ])  # fmt: skip
