import os
import subprocess
import sys

import pytest

from aerialct.errors import OutputExistsError
from aerialct.geo.outputs import atomic_output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from aerialct.cli.main import run; "
        "rc = run(['--help']); "
        "heavy = [m for m in ('torch', 'timm', 'geopandas', 'rasterio') if m in sys.modules]; "
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


@pytest.mark.parametrize("given", [None, "3"])
def test_cli_keeps_numpys_blas_to_one_thread_unless_told(given):
    # OpenBLAS sizes its pool when numpy loads: the CLI module must set it before any import
    # of numpy, and leave a user's own setting alone
    code = (
        "import os, sys; import aerialct.cli.main; "
        "print('numpy' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", given or "1"]


def test_version(cli):
    r = cli("--version")
    assert r.code == 0
    assert "aerialct" in r.out


def test_unknown_command_is_usage_error(cli):
    r = cli("no-such-verb")
    assert r.code == 2


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    try:
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_existing(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("keep")
    try:
        with atomic_output(target) as tmp:
            tmp.write_text("new")
        raise AssertionError("should refuse")
    except OutputExistsError as e:
        assert "--overwrite" in str(e)
    assert target.read_text() == "keep"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_help_lists_the_verbs_in_pipeline_order(cli):
    import typer

    from aerialct.cli.app import app

    r = cli("--help")
    assert r.code == 0
    section = r.out.split("Commands:", 1)[1].splitlines()
    listed = [ln.split()[0] for ln in section if ln.startswith("  ") and ln.strip()]
    assert listed == [
        "demo", "synth", "tile", "pack", "weights", "train", "info", "export", "predict",
        "vectorize", "evaluate",
    ]  # fmt: skip
    # every registered verb has a place in the order
    assert sorted(listed) == sorted(typer.main.get_command(app).commands)


def test_the_batch_failure_policy():
    """One library function decides: ok, partial (exit 3), or all failed (exit 1)."""
    import pytest

    from aerialct.errors import (
        AerialctError,
        InputError,
        ItemFailure,
        PartialFailure,
        raise_for_failures,
    )

    raise_for_failures(3, [], "scenes", result="r")  # nothing failed: nothing raised
    own = InputError("a.tif: bad")
    with pytest.raises(InputError, match=r"a\.tif: bad"):  # one item: its own error
        raise_for_failures(1, [ItemFailure("d/a.tif", "a.tif: bad", own)], "scenes")
    with pytest.raises(AerialctError, match=r"all 2 rasters failed; first: d/a\.tif: boom"):
        raise_for_failures(
            2, [ItemFailure("d/a.tif", "boom"), ItemFailure("b.tif", "x")], "rasters"
        )
    with pytest.raises(PartialFailure, match=r"^1 of 3 scenes failed: a\.tif$") as e:
        raise_for_failures(3, [ItemFailure("d/a.tif", "boom")], "scenes", result="r")
    assert e.value.result == "r"


@pytest.mark.parametrize(
    "argv,verb",
    [
        (["tile", "a.tif", "--out", "c"], "tile"),
        (["-q", "--log-file", "tile", "predict", "x.tif"], "predict"),  # a value named tile
        (["--log-format=json", "vectorize", "x.tif"], "vectorize"),
        (["-h", "tile"], None),  # the top-level help lists every verb
        (["--help"], None),
        (["no-such-verb"], None),
        ([], None),
    ],
)
def test_the_invoked_verb_is_found_past_global_options(argv, verb):
    from aerialct.cli.app import invoked_verb

    assert invoked_verb(argv) == verb


def test_a_run_builds_only_its_verb_and_leaves_the_app_whole(cli):
    from aerialct.cli.app import app

    before = list(app.registered_commands)
    r = cli("tile", "--no-such-option")
    assert r.code == 2 and "--no-such-option" in r.out + r.err
    assert app.registered_commands == before
    r = cli("-h")
    assert r.code == 0 and all(v in r.out for v in ("tile", "predict", "vectorize", "evaluate"))
