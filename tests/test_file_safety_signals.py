"""A signal never crashes a run: threads are started and stopped whole.

``predict`` reads windows on a thread (and writes rows on one, on a GPU). SIGTERM
becomes an exception raised wherever the main thread is; arriving while ``Thread.start``
waited for the new thread, it left a reader that no ``with`` block stopped, reading a
dataset that the unwinding then closed: SIGSEGV (-11) instead of exit 143, now and then
under load. These tests put the signal exactly there, in-process, with the CLI's own
handler.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import rasterio
from predict_helpers import random_image, write_scene

from aerialct.cli.main import _signals_unwind
from aerialct.errors import Terminated


@pytest.fixture
def signal_in_thread_start(monkeypatch):
    """``Thread.start`` that gets a SIGTERM while it waits for the new thread."""
    real = threading.Thread.start

    def start(self: threading.Thread) -> None:
        real(self)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs at the next bytecode boundary: here
            pass

    monkeypatch.setattr(threading.Thread, "start", start)


def test_sigterm_while_the_reader_starts_stops_the_reader(tmp_path, signal_in_thread_start):
    from aerialct.predict.plan import Frame, WindowGrid
    from aerialct.predict.reader import FrameInput, Reader

    scene = tmp_path / "s.tif"
    write_scene(scene, random_image(256, 256, seed=1))
    with rasterio.open(scene) as src:
        grid = WindowGrid.of(256, 256, 32, 16, batch_size=2)
        frame = Frame(grid, (0, len(grid.rows)), (0, len(grid.cols)))
        reader = Reader(FrameInput(src, [1, 2, 3]), frame, pin=False, depth=1)
        with _signals_unwind(), pytest.raises(Terminated), reader:
            pytest.fail("the body of a reader whose start was interrupted must not run")
        # nobody consumes: a reader left running would wait on its full queue for ever
        assert not reader.thread.is_alive()


def test_sigterm_while_the_writer_starts_stops_the_writer(tmp_path, signal_in_thread_start):
    import numpy as np

    from aerialct.predict.stream import GridStats, _Writer

    class Rows:  # a sink that keeps the rows written
        def __init__(self) -> None:
            self.rows: list[np.ndarray] = []

        def write(self, cls: np.ndarray, p8: np.ndarray | None) -> None:
            self.rows.append(cls)

    writer = _Writer(Rows(), GridStats(), threaded=True)
    with _signals_unwind(), pytest.raises(Terminated), writer:
        writer.put(np.zeros((1, 16), np.uint8), np.ones((1, 16), bool), None)
    assert not writer.thread.is_alive()


def test_a_held_signal_is_raised_when_the_hold_ends():
    from aerialct.workers import signals_held

    with _signals_unwind(), pytest.raises(Terminated) as caught, signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            pass
        reached = True
    assert reached and caught.value.signum == signal.SIGTERM


def test_skip_existing_redoes_a_scene_whose_outputs_were_half_renamed(tmp_path):
    # killed between the renames of one scene's outputs: probabilities there, classes not
    from predict_helpers import oracle_bundle

    from aerialct.predict import predict_scenes

    scene = tmp_path / "a.tif"
    write_scene(scene, random_image(40, 40, seed=1))
    out = tmp_path / "o"
    assert predict_scenes(oracle_bundle(32), [scene], out, probabilities=True).ok
    (out / "a_classes.tif").unlink()
    again = predict_scenes(oracle_bundle(32), [scene], out, probabilities=True, skip_existing=True)
    assert [s.status for s in again.scenes] == ["ok"], again.scenes[0].error
    # a file of the same name that is not this scene's prediction is never replaced
    (out / "a_classes.tif").unlink()
    (out / "a_probabilities.tif").write_bytes(b"someone else's file")
    again = predict_scenes(oracle_bundle(32), [scene], out, probabilities=True, skip_existing=True)
    assert again.scenes[0].status == "failed" and "output exists" in again.scenes[0].error
    assert (out / "a_probabilities.tif").read_bytes() == b"someone else's file"
