"""Progress in every mode: a live line per run in a worker, plain lines off a terminal, a bar over
the runs, labelled results, and nothing at all with --no-progress."""

from __future__ import annotations

import io

from experiments import parallel, progress, words
from experiments.progress import Board, RunProgress, Status


class Recorder:
    def __init__(self):
        self.shown, self.written, self.done = [], [], []

    def show(self, index, status):
        self.shown.append((index, status))

    def write(self, text, stream=None):
        self.written.append(text)

    def finished(self, index):
        self.done.append(index)

    def tick(self):
        pass


def test_workers_progress_and_output_reach_the_parents_watcher():
    watcher = Recorder()
    tasks = ["a", "b", "c"]
    outcomes = list(
        parallel.run_tasks(
            "tests._parallel_targets:reports_progress", tasks, jobs=2, watcher=watcher
        )
    )
    assert sorted(o.value for o in outcomes) == tasks
    assert sorted(s for _, s in watcher.shown if s) == ["a half", "b half", "c half"]
    assert {(i, s) for i, s in watcher.shown if s} == {
        (i, f"{t} half") for i, t in enumerate(tasks)
    }
    assert sorted(watcher.written) == [f"{t} says hello\n" for t in tasks]
    assert sorted(watcher.done) == [0, 1, 2]


def test_a_status_line_names_run_epoch_step_rate_and_eta():
    status = Status("none cutoff=6 seed=0", 150, 300, 100, 740.4, 95.0)
    assert status.line() == "none cutoff=6 seed=0  epoch 2/3  step 150/300  740 img/s  ETA 1m35s"
    assert Status("x", 300, 300, 100, None, None).epoch == 3


def test_off_a_terminal_the_board_prints_plain_lines_per_run_and_for_the_runs():
    stream = io.StringIO()
    board = Board(3, stream=stream, terminal=False, period=0.0)
    board.show(0, Status("none cutoff=6 seed=0", 10, 100, 50, 700.0, 30.0))
    board.show(1, "inverse cutoff=6 seed=0: starting")
    board.finished(2)
    assert stream.getvalue() == ""  # only on ticks
    board.tick()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("none cutoff=6 seed=0  epoch 1/2  step 10/100  700 img/s")
    assert lines[1] == "inverse cutoff=6 seed=0: starting"
    assert lines[2].startswith("runs [#######.............] 1/3 finished, 2 running")
    assert "\x1b" not in stream.getvalue()


def test_on_a_terminal_the_board_redraws_its_block_under_the_workers_output():
    stream = io.StringIO()
    board = Board(2, stream=stream, terminal=True)
    board.show(0, Status("a", 1, 10, 5, 100.0, 9.0))
    board.write("a: new run\n", stream)
    board.close()
    text = stream.getvalue()
    # drawn (2 lines), cleared (2 lines up), the output, drawn again, cleared at the end
    assert text.count("\x1b[2F\x1b[J") == 2
    assert text.index("a: new run") > text.index("\x1b[2F")
    assert text.count("runs [") == 2


def test_off_a_terminal_a_run_prints_plain_progress_lines(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_PERIOD_S", 0.0)
    stream = io.StringIO()
    bar = RunProgress("none cutoff=6 seed=0", total_steps=4, initial=0, steps_per_epoch=2,
                      batch_size=32, stream=stream)  # fmt: skip
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("none cutoff=6 seed=0  epoch 2/2  step 4/4")
    assert "\r" not in stream.getvalue()


def test_no_progress_prints_nothing(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_PERIOD_S", 0.0)
    stream = io.StringIO()
    bar = RunProgress("x", total_steps=4, initial=0, steps_per_epoch=2, batch_size=32,
                      enabled=False, stream=stream)  # fmt: skip
    bar.update(4)
    bar.close()
    assert stream.getvalue() == ""


def test_counts_agree_with_their_number():
    assert words.count(1, "seed") == "1 seed" and words.count(2, "seed") == "2 seeds"
    assert words.count(0, "run") == "0 runs"


def test_no_progress_reaches_the_data_loaders_bars(monkeypatch):
    from experiments import configs, data, plan

    seen = []

    def loader(*, cutoff, seed, progress=True, **params):
        seen.append(progress)
        raise RuntimeError("stop here")

    monkeypatch.setattr(data, "get_task_loader", lambda name: loader)
    for wanted in (False, True):
        try:
            plan.check_data(configs.get_config("csv_none"), 6, progress=wanted)
        except RuntimeError:
            pass
    assert seen == [False, True]
