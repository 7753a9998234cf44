"""vectorize's defaults agree between the command and the library."""

from __future__ import annotations


def test_the_cli_window_default_is_the_library_default():
    import inspect

    from aerialct.cli import vectorize as cli
    from aerialct.vectorize import vectorize
    from aerialct.vectorize.windows import DEFAULT_WINDOW

    cli_default = inspect.signature(cli.vectorize).parameters["window_size"].default
    assert cli_default == DEFAULT_WINDOW
    assert inspect.signature(vectorize).parameters["window_size"].default == DEFAULT_WINDOW
