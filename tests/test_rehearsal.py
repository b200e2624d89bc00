"""The rehearsal of full mode (``DSOS_QUICK=0 DSOS_REHEARSAL=1``, read in helpers.env).

The switch's unit tests run in the default ``pytest``. The rehearsal itself, every notebook of
notebooks/ run top to bottom with full mode's sizes, evaluation lengths and counts, trainings of
``env.REHEARSAL_ITERATIONS`` iterations and then the shipped models in their place, is marked
``rehearsal`` and left out of the default run (pyproject.toml): on a CPU it takes far longer than
quick mode (measured on a shared 2-core CPU on 2026-12-07: 5 s for chapter 00, under 2.5 minutes for
most notebooks, 7 minutes for 08's appendix, 23 minutes for chapter 05 and its appendix; about 36
minutes in all, past CI's 30 minutes beside the other tests).
Run it with ``pytest -m rehearsal tests/test_rehearsal.py`` (one notebook:
``-k 05_``). Every claim assert of full mode runs in it, so it fails where full mode would.
"""
from pathlib import Path

import pytest

from helpers import env

NOTEBOOKS = sorted((env.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 4 * 3600          # one cell of full mode's measurements can run long on a CPU


# ------------------------------------------------------------------------------ the switch

@pytest.fixture
def rehearsal(monkeypatch):
    monkeypatch.setenv("DSOS_QUICK", "0")
    monkeypatch.setenv(env.REHEARSAL_ENV, "1")


def test_rehearsal_is_off_in_the_tests_and_in_quick_mode():
    assert env.is_rehearsal() is False and env.is_quick() is True
    assert env.uses_shipped_models() is True and env.mode_name() == "quick"


def test_a_rehearsal_takes_full_modes_settings_and_shortens_only_the_trainings(rehearsal):
    assert env.is_rehearsal() is True and env.is_quick() is False
    assert env.mode_name() == "full (rehearsal)"
    assert env.pick(quick=24, full=128) == 128                     # full sizes, lengths and counts
    assert env.iterations(quick=30, full=8000) == env.REHEARSAL_ITERATIONS
    assert env.iterations(quick=1, full=2) == 2                    # never more than full mode's own count
    assert env.uses_shipped_models() is True


def test_iterations_in_each_mode(monkeypatch):
    assert env.iterations(quick=30, full=8000) == 30
    monkeypatch.setenv("DSOS_QUICK", "0")
    assert env.iterations(quick=30, full=8000) == 8000
    assert env.uses_shipped_models() is False
    with pytest.raises(ValueError, match=r"iterations\(full=...\) must be a positive integer, got 0"):
        env.iterations(quick=30, full=0)


def test_a_rehearsal_needs_no_quick_switch(monkeypatch):
    monkeypatch.delenv("DSOS_QUICK", raising=False)
    monkeypatch.setenv(env.REHEARSAL_ENV, "yes")
    assert env.is_quick() is False and env.is_rehearsal() is True


@pytest.mark.parametrize("value", ["2", "maybe", "full"])
def test_bad_rehearsal_value_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(env.REHEARSAL_ENV, value)
    with pytest.raises(ValueError, match=f"DSOS_REHEARSAL='{value}' is not understood; use DSOS_REHEARSAL=1"):
        env.is_rehearsal()
    with pytest.raises(ValueError, match="DSOS_REHEARSAL"):
        env.is_quick()                                            # the mode cannot be decided either


def test_a_rehearsal_of_quick_mode_is_refused(monkeypatch):
    monkeypatch.setenv("DSOS_QUICK", "1")
    monkeypatch.setenv(env.REHEARSAL_ENV, "1")
    with pytest.raises(ValueError, match="rehearses full mode, but DSOS_QUICK=1.*set DSOS_QUICK=0"):
        env.is_quick()


def test_trained_or_shipped_says_which_model_the_chapter_measures(monkeypatch, capsys):
    loads = []

    def load_shipped():
        loads.append(1)
        return "shipped"

    assert env.trained_or_shipped("trained", load_shipped) == "shipped"          # quick mode (the tests)
    assert "quick mode" in capsys.readouterr().out
    monkeypatch.setenv("DSOS_QUICK", "0")
    assert env.trained_or_shipped("trained", load_shipped) == "trained"          # full mode: never loads
    assert len(loads) == 1 and "trained above" in capsys.readouterr().out
    monkeypatch.setenv(env.REHEARSAL_ENV, "1")
    assert env.trained_or_shipped("trained", load_shipped, "data/models/x.pt") == "shipped"
    said = capsys.readouterr().out
    assert "rehearsal" in said and f"only {env.REHEARSAL_ITERATIONS} iterations" in said and "data/models/x.pt" in said


def test_stand_in_replaces_the_trained_model_only_in_a_rehearsal(monkeypatch, capsys):
    def load_shipped():
        return "shipped"

    assert env.stand_in("trained", load_shipped) == "trained"                   # quick mode
    monkeypatch.setenv("DSOS_QUICK", "0")
    assert env.stand_in("trained", load_shipped) == "trained"                   # full mode
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(env.REHEARSAL_ENV, "1")
    assert env.stand_in("trained", load_shipped, "rd_x.pt") == "shipped"
    assert "rd_x.pt stands in" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the rehearsal

def run_notebook(path: Path, executed: Path) -> None:
    """Execute ``path`` top to bottom in a fresh kernel, which inherits this process's environment, and
    write it with its outputs to ``executed``. Each cell's time is printed as it ends (seen with
    ``pytest -s``; pytest shows it on a failure)."""
    import time

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    started = {"at": time.perf_counter()}

    def report(cell, cell_index, **_):
        now = time.perf_counter()
        print(f"{path.name} cell {cell_index}: {now - started['at']:.0f} s", flush=True)
        started["at"] = now

    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_executed=report)
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} fails in the rehearsal of full mode:\n{error}", pytrace=False)
    finally:
        nbformat.write(notebook, executed)
        print(f"{path.name} with its outputs: {executed}")
    setup_output = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                           for output in cell.get("outputs", []) if output.get("name") == "stdout")
    assert "mode: full (rehearsal)" in setup_output, f"{path.name} did not run in the rehearsal"


@pytest.mark.rehearsal
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_the_rehearsal_of_full_mode(rehearsal, path, tmp_path):
    run_notebook(path, tmp_path / path.name)
