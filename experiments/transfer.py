"""`python -m experiments.transfer`: does a pretrained backbone change the comparison?

The embedded demonstration of fine-tuning, on the catalog alone (no download):

  1. pretrain: the tier's network trained with `none` on a balanced catalog of the Fashion-MNIST
     classes SOURCE_CLASSES (T-shirt/top, Pullover, Coat, Shirt, Bag), every class at the head
     count (the `balanced` method), one run per seed;
  2. on the long-tailed catalog of the other five classes, TARGET_CLASSES (Trouser, Dress,
     Sandal, Sneaker, Ankle boot), at the smallest cut-off (CUTOFF), train `none`, `inverse` and
     `proposed` (beta fixed at 0.999, the method's default) twice: from scratch, and fine-tuned
     from the pretrained run of the same seed (`--set model.init_from=<its run folder>`).

The split is the even/odd one, fixed before any run: the two halves share no class, hence no
label and no item (train and validation items come from Fashion-MNIST's training images, test
items from t10k, and every item belongs to one class), so nothing of the target's test set, or
even of its classes, is seen in pretraining. Each half has five classes (the 2 x 2 grid needs four).
The source half holds the four upper-body garments that Fashion-MNIST classifiers confuse most,
so pretraining has to learn garment shape and texture; the target half is mostly footwear and
trousers, which pretraining never shows: features must transfer across garment types.

Fine-tuned and scratch runs differ only in their initialisation (same data, seed, schedule,
optimiser; the fine-tune recipe's fields keep their defaults), so their paired difference is the
effect of the backbone. Every run goes through the runner (`experiments.run`: validation,
records, per-run locks, skipping of finished runs, checkpoints and resumption); rerunning the
command resumes an interrupted demonstration. Records go to

  <records>/transfer/<tier>/{source,scratch,pretrained}/<config>/<variant>/cutoff<k>/seed<s>/

and the report (`python -m experiments.report`, run at the end) shows them in the "Pretrained
backbone" section of RESULTS.md (experiments/report/transfer.py), apart from the main tables.

Time (cpu tier, 2 cores, 2 jobs): 3 seeds x (1 pretrain + 3 scratch + 3 fine-tuned) = 21 runs of
~90 s each (DEMO_SCHEDULES: on the cpu tier the demonstration trains 24 epochs, half
the cpu tier's 48, so that it fits in half an hour; 2,000 training images per run for either
half, as for the ten-class catalog), in two phases because fine-tuning needs its pretrained
run: phase 1 (3 pretrain + 9 scratch = 12 runs, 6 rounds of 2) and phase 2 (9 fine-tuned,
5 rounds), 11 rounds: ~17 min at 90 s a run, ~22 min at 120 s. `--dry-run` prints the plan and
the estimate.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments import configs, execute, report, run, xla
from experiments import plan as plan_mod
from experiments.configs import overrides, tiers
from experiments.runs import Run, expand_runs, plan_action, read_record

SOURCE_CLASSES = (0, 2, 4, 6, 8)
TARGET_CLASSES = (1, 3, 5, 7, 9)
PRETRAIN_METHOD = "balanced"  # `none` on the balanced catalog: every class at the head count
METHODS = ("none", "inverse", "proposed")
PROPOSED_BETA = 0.999  # the method's default; the main sweep's second beta is left out
CUTOFF = 6  # the smallest cut-off of the main sweep (experiments.configs.base.DEFAULT_CUTOFFS)
DEFAULT_SEEDS = (0, 1, 2)
RECORDS_ROOT = "results/runs"
LEGS = ("source", "scratch", "pretrained")


@dataclasses.dataclass(frozen=True)
class Leg:
    """One `experiments.run` invocation of the demonstration: its arguments and its runs."""

    name: str  # source | scratch | pretrained
    argv: tuple[str, ...]
    runs: tuple[Run, ...]


def _sets(pairs: Sequence[tuple[str, object]]) -> list[str]:
    out = []
    for path, value in pairs:
        out += ["--set", f"{path}={value!r}"]
    return out


def leg_overrides(leg: str, method: str, init_from: str | None = None) -> list[tuple[str, object]]:
    """The `--set` overrides of one leg's config (beyond tier, seeds, cut-offs, folder)."""
    classes = SOURCE_CLASSES if leg == "source" else TARGET_CLASSES
    pairs: list[tuple[str, object]] = [("data.classes", list(classes))]
    if method == "proposed":
        pairs.append(("scheme_params.beta", PROPOSED_BETA))
    if init_from is not None:
        pairs.append(("model.init_from", init_from))
    return pairs


# The demonstration's own schedule, per tier (other tiers keep the tier's): on the cpu tier the 24
# epochs it was sized and recorded at, half the tier's 48, and the seconds a run takes there.
# Scratch and fine-tuned legs share it, so their paired difference is still the backbone's effect;
# at 48 epochs the cpu demonstration would take ~35 min instead of ~17.
@dataclasses.dataclass(frozen=True)
class DemoSchedule:
    num_epochs: int
    seconds_per_run: float


DEMO_SCHEDULES = {"cpu": DemoSchedule(num_epochs=24, seconds_per_run=90.0)}


def schedule_overrides(tier: str) -> list[tuple[str, object]]:
    """The demonstration's own schedule where it has one (DEMO_SCHEDULES), else nothing."""
    schedule = DEMO_SCHEDULES.get(tier)
    return [] if schedule is None else [("num_epochs", schedule.num_epochs)]


def output_dir(records: str, tier: str, leg: str) -> str:
    return f"{records}/transfer/{tier}/{leg}"


def make_leg(
    leg: str,
    method: str,
    *,
    tier: str,
    records: str,
    seeds: Sequence[int],
    init_from: str | None = None,
    check: bool = True,
) -> Leg:
    """The runs of one leg, as `python -m experiments.run` resolves `argv` (validated unless
    `check` is False: a fine-tuned leg's `model.init_from` is checked only once its pretraining
    run exists). The leg's overrides are attached to each run's `point`, so a failed run's
    recovery command (experiments.execute.recovery_command) repeats them."""
    pairs = schedule_overrides(tier) + leg_overrides(leg, method, init_from)
    argv = ["--config", f"catalog_{method}", "--tier", tier]
    argv += ["--output-dir", output_dir(records, tier, leg), "--seeds", ",".join(map(str, seeds))]
    if leg != "source":
        argv += ["--cutoffs", str(CUTOFF)]
    argv += _sets(pairs)
    args = run.parse_args(argv)
    if check:
        _, _, runs = plan_mod.resolve_config(args)
    else:  # resolve_config without the validation
        config, _ = configs.resolve(args.config, tier=args.tier)
        config = overrides.apply_overrides(config, args.overrides)
        config.output_dir = args.output_dir
        runs = expand_runs(config, seeds=args.seeds, cutoffs=args.cutoffs)
    runs = [dataclasses.replace(r, point=tuple(pairs) + r.point) for r in runs]
    return Leg(leg, tuple(argv), tuple(runs))


def pretraining_available(source: Leg, seed: int) -> bool:
    """Whether the seed's pretraining run finished and its checkpoints are here (a clone holds
    the committed records but never the checkpoints: there the fine-tuned legs are planned
    unvalidated, and their finished records are skipped as usual)."""
    (pretrain,) = [r for r in source.runs if r.seed == seed]
    finished = (read_record(pretrain.record_path) or {}).get("status") == "finished"
    return finished and (Path(pretrain.workdir) / "checkpoints").is_dir()


def plan_legs(*, tier: str, records: str, seeds: Sequence[int]) -> tuple[list[Leg], list[Leg]]:
    """(phase 1, phase 2): the pretraining and from-scratch legs, then the fine-tuned ones (one
    per method and seed, each from the pretraining run folder of its seed; validated where that
    run has finished, as it has when phase 2 starts)."""
    source = make_leg("source", PRETRAIN_METHOD, tier=tier, records=records, seeds=seeds)
    phase1 = [source] + [
        make_leg("scratch", m, tier=tier, records=records, seeds=seeds) for m in METHODS
    ]
    pretrained = {r.seed: r.workdir for r in source.runs}
    phase2 = [
        make_leg(
            "pretrained",
            m,
            tier=tier,
            records=records,
            seeds=[s],
            init_from=str(pretrained[s]),
            check=pretraining_available(source, s),
        )
        for m in METHODS
        for s in seeds
    ]
    return phase1, phase2


def estimate_seconds(num_runs: Sequence[int], tier: str, jobs: int) -> float | None:
    """Rounds of `jobs` runs per phase times the tier's seconds per run (None: not measured)."""
    if tier in DEMO_SCHEDULES:
        seconds = DEMO_SCHEDULES[tier].seconds_per_run
    else:
        seconds = tiers.EXPECTED_SECONDS_PER_RUN.get(tier)
    if seconds is None:
        return None
    return sum(math.ceil(n / jobs) for n in num_runs) * seconds


def _plan(legs: Sequence[Leg]):
    return [(r, *plan_action(r, force=False)) for leg in legs for r in leg.runs]


def _minutes(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"~{seconds / 60:.0f} min ({seconds:.0f} s)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.transfer",
        description="Pretrain on half of the Fashion-MNIST classes, then train none / inverse / "
        "proposed on a long-tailed catalog of the other half from scratch and fine-tuned; "
        "write the records and regenerate the report.",
    )
    parser.add_argument("--tier", default="cpu", choices=list(tiers.TIERS), help="default cpu")
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, DEFAULT_SEEDS)),
        help="comma list of replicates (default 0,1,2)",
    )
    parser.add_argument("--records", default=RECORDS_ROOT, help=f"default {RECORDS_ROOT}")
    parser.add_argument("--jobs", type=int, help="runs at once (default: one per core)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; train nothing")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _print_plan(phases, jobs: int, tier: str, records: str) -> int:
    todo = []
    print(f"Records under {output_dir(records, tier, '{' + ','.join(LEGS) + '}')}/.")
    for number, plan in enumerate(phases, 1):
        rows = [
            [a, r.workdir.parts[-5] if len(r.workdir.parts) >= 5 else "?", r.label]
            + ([str(r.config.model.init_from)] if number == 2 else [])
            + [why]
            for r, a, why in plan
        ]
        header = ("action", "leg", "run") + (("fine-tuned from",) if number == 2 else ()) + ("why",)
        print(
            f"\nphase {number}: "
            + (
                "pretraining and from scratch"
                if number == 1
                else "fine-tuned from the pretraining run of the same seed"
            )
        )
        print(execute.format_table(header, rows))
        todo.append(sum(a == "run" for _, a, _ in plan))
    print()
    total = estimate_seconds(todo, tier, jobs)
    print(
        f"{sum(todo)} of {sum(len(p) for p in phases)} runs would train ({todo[0]} in phase 1, "
        f"{todo[1]} in phase 2), {jobs} at a time: {_minutes(total)}.",
        flush=True,  # before worker processes start (they would print an unflushed buffer again)
    )
    return sum(todo)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        seeds = plan_mod.parse_int_list(args.seeds)
        phase1, phase2 = plan_legs(tier=args.tier, records=args.records, seeds=seeds)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return execute.EXIT_USAGE
    jobs = args.jobs or plan_mod.default_jobs()
    phases = [_plan(phase1), _plan(phase2)]
    _print_plan(phases, jobs, args.tier, args.records)
    if args.dry_run:
        return 0
    code = 0
    for number, (legs, plan) in enumerate(zip((phase1, phase2), phases, strict=True), 1):
        todo = [r for r, action, _ in plan if action == "run"]
        if not todo:
            continue
        try:
            plan_mod.check_writable(Path(args.records))
            plan_mod.check_runs_data(todo[:1], progress=not args.no_progress)
        except Exception as e:  # the folder's or the data layer's own message
            print(f"error: {e}", file=sys.stderr)
            return execute.EXIT_USAGE
        remaining = estimate_seconds(
            [len(todo)] + ([len(phases[1])] if number == 1 else []), args.tier, jobs
        )
        print(
            f"\nphase {number} of 2: {len(todo)} runs; the demonstration ends in "
            f"{_minutes(remaining)}.",
            flush=True,
        )
        if number == 2:  # now that pretraining has finished, with init_from validated
            try:
                legs = plan_legs(tier=args.tier, records=args.records, seeds=seeds)[1]
            except ValueError as e:
                print(f"error: {e}", file=sys.stderr)
                return execute.EXIT_USAGE
        plan = _plan(legs)  # again: a run may have finished meanwhile
        options = execute.Options(
            argv=("--tier", args.tier, "--seeds", args.seeds, "--records", args.records),
            program="experiments.transfer",
            per_run_argv=True,
            progress=not args.no_progress,
            cache_dir=execute.compilation_cache_dir(todo[0].config),
        )
        trainer = execute.load_trainer() if jobs == 1 or len(todo) == 1 else None
        code = execute.execute(plan, options, trainer, jobs=jobs) or code
        if code == execute.EXIT_INTERRUPTED:
            return code
        unfinished = [
            r.label
            for r in phase1[0].runs
            if (read_record(r.record_path) or {}).get("status") != "finished"
        ]
        if number == 1 and unfinished:
            print(
                f"error: pretraining did not finish ({', '.join(unfinished)}), so nothing can be "
                "fine-tuned from it; see above, then rerun the same command.",
                file=sys.stderr,
            )
            return execute.EXIT_FAILED
    if args.no_report:
        return code

    report_args = ["--records", args.records]
    if args.records != RECORDS_ROOT:
        report_args += ["--out", f"{args.records}/REPORT.md"]
    return report.main(report_args) or code


if __name__ == "__main__":
    xla.configure_process()
    sys.exit(main())
