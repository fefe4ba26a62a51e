"""Progress as the user sees it, in every mode.

One run reports through `RunProgress` (the trainer's loop calls `update` once per step):

- in this process, on a terminal: a tqdm bar (loss, images/s);
- in this process, elsewhere (a log file, a pipe): one plain line every `PLAIN_PERIOD_S` seconds;
- in a worker process of `experiments.parallel`: a `Status` sent to the parent about once a
  second, which the parent's `Board` shows: one live line per running run (run name, epoch,
  step, images/s, ETA) under a bar over the runs on a terminal, or the same as plain lines every
  `PLAIN_PERIOD_S` seconds elsewhere. The workers' own output goes through the board too, so
  their lines never break the live block.

`--no-progress` turns all of it off (`enabled=False`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import IO, Any

from experiments import parallel
from experiments.words import duration

# Seconds between plain progress lines where the output is not a terminal ($LTWEIGHTS_PROGRESS_S).
PLAIN_PERIOD_S = float(os.environ.get("LTWEIGHTS_PROGRESS_S", "30"))
# Seconds between the Status messages a worker sends its parent.
WORKER_PERIOD_S = 1.0


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True)
class Status:
    """Where one run stands."""

    name: str
    step: int
    total_steps: int
    steps_per_epoch: int
    images_per_s: float | None
    eta_s: float | None

    @property
    def epoch(self) -> int:
        """The epoch in progress (1-based; the last one once every step is done)."""
        return min(self.step // self.steps_per_epoch + 1, self.num_epochs)

    @property
    def num_epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch)

    def line(self) -> str:
        rate = "? img/s" if self.images_per_s is None else f"{self.images_per_s:.0f} img/s"
        return (
            f"{self.name}  epoch {self.epoch}/{self.num_epochs}  step {self.step}/"
            f"{self.total_steps}  {rate}  ETA {duration(self.eta_s)}"
        )


class RunProgress:
    """The progress of one run: `update(n)` per step, `set_postfix` for the bar, `close()`.

    Rates and the ETA count from the first update of this session (after compilation), so a
    resumed run's ETA is that of its remaining steps.
    """

    def __init__(
        self,
        name: str,
        *,
        total_steps: int,
        initial: int,
        steps_per_epoch: int,
        batch_size: int,
        enabled: bool = True,
        stream: IO | None = None,
    ):
        self.name, self.total, self.step = name, total_steps, initial
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.stream = stream if stream is not None else sys.stderr
        self.start: tuple[float, int] | None = None
        self.last_sent = float("-inf")
        self.mode = self._mode(enabled)
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps, initial=initial, unit="step", desc=name, leave=False,
                file=self.stream,
            )  # fmt: skip

    def _mode(self, enabled: bool) -> str:
        if not enabled:
            return "off"
        if parallel.in_worker():
            return "worker"
        return "bar" if is_terminal(self.stream) else "plain"

    def status(self, now: float | None = None) -> Status:
        now = time.monotonic() if now is None else now
        rate = eta = None
        if self.start is not None and now > self.start[0] and self.step > self.start[1]:
            steps_per_s = (self.step - self.start[1]) / (now - self.start[0])
            rate = steps_per_s * self.batch_size
            eta = (self.total - self.step) / steps_per_s
        return Status(self.name, self.step, self.total, self.steps_per_epoch, rate, eta)

    def update(self, n: int = 1) -> None:
        now = time.monotonic()
        if self.start is None:  # the first step compiles: rates count from its end
            self.start = (now, self.step + n)
        self.step += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "worker" and now - self.last_sent >= WORKER_PERIOD_S:
            self.last_sent = now
            parallel.report_progress(self.status(now))
        elif self.mode == "plain" and now - self.last_sent >= PLAIN_PERIOD_S:
            self.last_sent = now
            print(self.status(now).line(), file=self.stream, flush=True)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "worker":
            parallel.report_progress(None)  # this run's line goes


def _line(status: Status | str) -> str:
    return status if isinstance(status, str) else status.line()


class Board:
    """The parent's view of the runs its workers train: `show(index, status)` as statuses come,
    `finished(index)`, `write(text)` for the workers' output, `tick()` on every poll, `close()`.

    On a terminal it redraws a block at the bottom (one line per running run, then a bar over the
    runs); elsewhere it prints that block as plain lines every `period` seconds.
    """

    def __init__(
        self,
        num_runs: int,
        *,
        stream: IO | None = None,
        terminal: bool | None = None,
        period: float = PLAIN_PERIOD_S,
    ):
        self.num_runs, self.done = num_runs, 0
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.period, self.last_plain = period, time.monotonic()
        self.running: dict[int, Status | str] = {}  # a str: a run not training yet
        self.drawn = 0  # lines of the live block on screen
        self.started = time.monotonic()

    def show(self, index: int, status: Status | str | None) -> None:
        if status is None:
            self.running.pop(index, None)
        else:
            self.running[index] = status
        self._redraw()

    def finished(self, index: int) -> None:
        self.running.pop(index, None)
        self.done += 1
        self._redraw()

    def write(self, text: str, stream: IO | None = None) -> None:
        """Prints a worker's output above the live block."""
        self._clear()
        print(text, end="" if text.endswith("\n") else "\n", file=stream or self.stream)
        (stream or self.stream).flush()
        self._redraw()

    def tick(self) -> None:
        if not self.terminal and time.monotonic() - self.last_plain >= self.period:
            self.last_plain = time.monotonic()
            for line in self.lines():
                print(line, file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        self._clear()

    def lines(self) -> list[str]:
        runs = [_line(self.running[i]) for i in sorted(self.running)]
        return [*runs, self.overall()]

    def overall(self, width: int = 20) -> str:
        filled = round(width * self.done / max(self.num_runs, 1))
        etas = [s.eta_s if isinstance(s, Status) else None for s in self.running.values()]
        eta = (
            max(etas)
            if etas and None not in etas and self.done + len(etas) == self.num_runs
            else None
        )
        tail = f", ETA {duration(eta)}" if eta is not None else ""
        return (
            f"runs [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.num_runs} finished, "
            f"{len(self.running)} running, {duration(time.monotonic() - self.started)} elapsed"
            f"{tail}"
        )

    def _clear(self) -> None:
        if self.terminal and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _redraw(self) -> None:
        if not self.terminal:
            return
        self._clear()
        lines = self.lines()
        self.stream.write("".join(f"{line}\x1b[K\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)
