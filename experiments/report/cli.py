"""`python -m experiments.report`: where the report reads and writes, and writing it.

Only the committed records (results/runs) write the committed RESULTS.md and results/plots/ by
default; other records need --out, and their plots go beside it (`<out stem>_plots/`) unless
--plots-dir says otherwise. Writing the committed files from other records takes
--overwrite-committed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.atomic import atomic_write_all, disk_full, disk_full_message
from experiments.report.loading import ReportError, read_runs
from experiments.report.markdown import build_report, relative
from experiments.report.plots import manifest_key, read_manifest, update_plots

# The committed sweep: its records, the report and plots made from them, and its analysis prose.
COMMITTED_RECORDS = "results/runs"
COMMITTED_REPORT = "RESULTS.md"
COMMITTED_PLOTS = "results/plots"
DEFAULT_NOTES = "results/NOTES.md"


class UsageError(ReportError):
    """Arguments that would write somewhere the user did not ask for."""


@dataclass(frozen=True)
class Outputs:
    out: Path
    plots_dir: Path
    notes: Path | None


def default_plots_dir(out: str | os.PathLike) -> Path:
    """A report's plots folder: beside it, named after it (my_results.md -> my_results_plots)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_plots")


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def resolve_outputs(
    records: str | os.PathLike,
    out: str | os.PathLike | None = None,
    plots_dir: str | os.PathLike | None = None,
    notes: str | os.PathLike | None = None,
    *,
    overwrite_committed: bool = False,
) -> Outputs:
    """Where a report of `records` goes; UsageError where that was not asked for.

    Relative paths are taken from the current folder, as the command line gives them.
    """
    committed = _same_path(records, COMMITTED_RECORDS)
    if out is None:
        if not committed:
            raise UsageError(
                f"--out is required with --records {records} (only the committed records, "
                f"{COMMITTED_RECORDS}, write {COMMITTED_REPORT} by default): add e.g. "
                "--out my_results.md"
            )
        out = COMMITTED_REPORT
    out = Path(out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder; --out names the markdown file to write, e.g. "
            f"--out {out / 'report.md'}"
        )
    if plots_dir is None:
        plots_dir = COMMITTED_PLOTS if _same_path(out, COMMITTED_REPORT) else default_plots_dir(out)
    plots_dir = Path(plots_dir)
    if not committed and not overwrite_committed:
        for flag, given, target in (
            ("--out", out, COMMITTED_REPORT),
            ("--plots-dir", plots_dir, COMMITTED_PLOTS),
        ):
            if _same_path(given, target):
                raise UsageError(
                    f"{flag} {given} would overwrite the committed {target} with records from "
                    f"{records}: choose another {flag}, or pass --overwrite-committed"
                )
    if notes is None and committed and Path(DEFAULT_NOTES).is_file():
        notes = DEFAULT_NOTES
    return Outputs(out, plots_dir, Path(notes) if notes is not None else None)


def write_report(
    records_dir: str | os.PathLike,
    out: str | os.PathLike,
    plots_dir: str | os.PathLike | None = None,
    notes_path: str | os.PathLike | None = None,
) -> list[str]:
    """Reads the records, writes the plots, then the report and the plots manifest atomically,
    then removes the plots this report wrote before and no longer makes; returns the summary.

    `plots_dir` defaults to `default_plots_dir(out)`. Every check that can fail runs before the
    first write, so a bad record or notes file leaves the old report and plots as they were.
    """
    out = Path(out)
    plots_dir = Path(plots_dir) if plots_dir is not None else default_plots_dir(out)
    notes = None
    if notes_path is not None:
        notes_path = Path(notes_path)
        if not notes_path.is_file():
            raise ReportError(
                f"Notes file {str(notes_path)!r} does not exist. Create it (markdown, kept in "
                "the repository) or leave out --notes."
            )
        notes = notes_path.read_text(encoding="utf-8")
    runs = read_runs(records_dir)
    previous = read_manifest(plots_dir)
    text, plots, summary = build_report(
        runs,
        records_dir=records_dir,
        out=out,
        plots_dir=plots_dir,
        notes=notes,
        notes_name=relative(notes_path, out.parent) if notes_path is not None else None,
    )
    # All or nothing: a full disk leaves the old report and plots as they were.
    atomic_write_all({**{Path(p): data for p, data in plots.items()}, out: text.encode("utf-8")})
    summary.append(f"Wrote {out} and {len(plots)} plots in {plots_dir}.")
    removed = update_plots(plots_dir, manifest_key(out, plots_dir), previous, plots)
    if removed:
        summary.append(
            f"Removed {len(removed)} plots this report wrote before and no longer makes: "
            f"{', '.join(removed)}."
        )
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.report",
        description="Write a markdown report and its plots from run records. Without arguments: "
        f"regenerate {COMMITTED_REPORT} and {COMMITTED_PLOTS}/ from {COMMITTED_RECORDS}.",
    )
    parser.add_argument(
        "--records",
        default=COMMITTED_RECORDS,
        help=f"folder of run records, searched recursively (default: {COMMITTED_RECORDS}, the "
        "committed sweep; your own runs are under runs/)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"markdown file to write; required unless --records is {COMMITTED_RECORDS} "
        f"(default then: {COMMITTED_REPORT})",
    )
    parser.add_argument(
        "--plots-dir",
        default=None,
        help=f"folder for the PNG plots (default: {COMMITTED_PLOTS} for {COMMITTED_REPORT}, "
        "otherwise <out stem>_plots beside --out)",
    )
    parser.add_argument(
        "--notes",
        default=None,
        help=f"markdown file included verbatim under 'Notes' (default: {DEFAULT_NOTES} where the"
        " records are the committed ones and it exists)",
    )
    parser.add_argument(
        "--overwrite-committed",
        action="store_true",
        help=f"allow records other than {COMMITTED_RECORDS} to write {COMMITTED_REPORT} or "
        f"{COMMITTED_PLOTS}",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outputs = resolve_outputs(
            args.records,
            args.out,
            args.plots_dir,
            args.notes,
            overwrite_committed=args.overwrite_committed,
        )
    except UsageError as e:
        print(f"python -m experiments.report: usage error: {e}", file=sys.stderr)
        return 2
    try:
        summary = write_report(args.records, outputs.out, outputs.plots_dir, outputs.notes)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # nothing was written: the files are renamed only once all are whole
        reason = disk_full_message(e, outputs.out.parent) if disk_full(e) else str(e)
        print(
            f"error: {reason}; the report was not written ({outputs.out} and its plots are as "
            "they were)",
            file=sys.stderr,
        )
        return 1
    print("\n".join(summary))
    return 0
