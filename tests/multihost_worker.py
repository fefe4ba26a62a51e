"""One process of a multi-process `python -m experiments.run` in tests and benchmarks.

  python tests/multihost_worker.py [--interrupt-at-step K] -- <experiments.run arguments>

runs `experiments.run.main` with the given arguments. With `--interrupt-at-step K` the trainer
of THIS process behaves as if SIGINT arrived during step K (`interrupt_at_step`); give it to one
process only to check that a stop seen by one process stops all of them at the same step.
"""

from __future__ import annotations

import argparse
import functools
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interrupt-at-step", type=int)
    parser.add_argument("run_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    run_args = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args

    from experiments import run, train, xla

    xla.configure_process()  # the CPU settings `python -m experiments.run` starts with

    if args.interrupt_at_step is not None:
        train.train_and_evaluate = functools.partial(
            train.train_and_evaluate, interrupt_at_step=args.interrupt_at_step
        )
    return run.main(run_args)


if __name__ == "__main__":
    sys.exit(main())
