"""What an epoch pays beyond its steps: plots within a time budget, best.pt without a copy."""

from __future__ import annotations

import os
import zipfile

from aerialct.engine import train as train_mod
from aerialct.engine.run import _same_file


def test_plots_are_redrawn_within_their_time_budget(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: now[0])
    budget = train_mod._PlotBudget()  # the run starts at 100 s
    now[0] = 110.0
    assert not budget.due(final=False)  # 10 s of training: a drawing (1.5 s) is over 5%
    assert budget.due(final=True)  # the final epoch always draws
    now[0] = 130.0
    assert budget.due(final=False)  # 30 s: 1.5 s is 5%
    budget.drawn(started=130.0)
    now[0] = 131.0
    budget.drawn(started=130.0)  # that drawing took 1 s
    now[0] = 140.0
    assert not budget.due(final=False)  # 9 s later: 1 s would be over 5% of it
    now[0] = 151.0
    assert budget.due(final=False)  # 20 s later: 1 s is 5%


def test_best_is_a_link_to_the_verified_last_and_outlives_it(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    with zipfile.ZipFile(last, "w") as z:
        z.writestr("a", b"first")
    _same_file(last, best)
    assert os.stat(last).st_ino == os.stat(best).st_ino
    tmp = tmp_path / "next.pt"
    with zipfile.ZipFile(tmp, "w") as z:
        z.writestr("a", b"second")
    os.replace(tmp, last)  # how save_checkpoint replaces last.pt
    with zipfile.ZipFile(best) as z:
        assert z.read("a") == b"first"
    assert not list(tmp_path.glob("*aerialct-tmp*"))
