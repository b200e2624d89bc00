"""The time budget of a live session (helpers.env): reading time, exercises, the chapter map of
chapter 00 (made from the notebooks present) and the session plan."""
import json

import pytest

from helpers import env


def write_notebook(path, markdown=(), code=()):
    cells = ([{"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": text}
              for i, text in enumerate(markdown)]
             + [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": text, "outputs": [],
                 "execution_count": None} for i, text in enumerate(code)])
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_reading_time_counts_the_words_of_the_text_cells_only(tmp_path):
    path = write_notebook(tmp_path / "01_x.ipynb", markdown=["# 01 · A title\n" + "word " * 397, "two more"],
                          code=["not counted " * 1000])
    assert env.reading_minutes(path) == pytest.approx((5 + 397 + 2) / env.READING_WORDS_PER_MINUTE)
    assert env.notebook_title(path) == "A title"


def test_exercises_are_counted_once_each(tmp_path):
    path = write_notebook(tmp_path / "01_x.ipynb", markdown=["# 01 · t"],
                          code=['exercises.check("01.a", f)', 'exercises.check("01.a", g, strict=True)',
                                "exercises.check( '01.b', h)"])
    assert env.exercise_ids(path) == ["01.a", "01.b"]


def test_a_notebook_without_a_title_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="01_x.ipynb has no title"):
        env.notebook_title(write_notebook(tmp_path / "01_x.ipynb", markdown=["no heading"]))


def test_the_chapter_map_lists_every_notebook_present_with_lessons_and_appendices():
    rows = env.chapter_map()
    present = sorted(path.name for path in (env.REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert [row["file"] for row in rows] == present
    table = env.chapter_map_markdown(rows)
    assert all(f"`{name}`" in table for name in present)
    assert {row["kind"] for row in rows if row["file"].endswith("_appendix.ipynb")} <= {"appendix"}
    assert [row["number"] for row in rows if row["kind"] == "lesson"] == [f"{n:02d}" for n in range(9)]


def test_chapter_00_shows_the_generated_map():
    chapter_00 = env.REPO_ROOT / "notebooks" / "00_start_here.ipynb"
    code = "\n".join(env._cells(chapter_00, "code"))
    assert "env.chapter_map_markdown()" in code and "env.session_plan()" in code


def test_measured_times_are_stored_merged_and_shown(tmp_path):
    store = tmp_path / "times.json"
    env.write_notebook_times([("00_start_here.ipynb", 9.94)], store)
    env.write_notebook_times([("01_differentiable_programming.ipynb", 20.0)], store)
    times = env.stored_notebook_times(store)
    assert times["seconds"] == {"00_start_here.ipynb": 9.9, "01_differentiable_programming.ipynb": 20.0}
    assert times["mode"] == "quick" and "CPU cores" in times["machine"]
    rows = env.chapter_map(times=times)
    assert rows[0]["quick_seconds"] == 9.9 and "| 10 s |" in env.chapter_map_markdown(rows)
    assert env.stored_notebook_times(tmp_path / "none.json") == {"seconds": {}}


def test_the_session_plan_keeps_to_its_length_and_leaves_the_appendices():
    lesson = {"kind": "lesson", "reading_minutes": 20.0, "quick_seconds": 120.0, "exercises": 2}
    rows = [{**lesson, "file": f"0{n}_x.ipynb"} for n in range(9)] + [
        {**lesson, "kind": "appendix", "file": "01_x_appendix.ipynb"}]
    plan = env.session_plan(rows, total=180)
    starts = [float(line.split()[0]) for line in plan]
    assert starts == sorted(starts) and starts[-1] <= 180
    assert any("break" in line for line in plan) and "for later" in plan[-1]
    assert not any("appendix.ipynb (" in line for line in plan)
    assert len([line for line in plan if "_x.ipynb (" in line]) == 4     # 32 min each, a break after each


def test_timing_reports_a_notebook_that_fails_or_kills_its_kernel_and_times_the_others(tmp_path, capsys):
    paths = [write_notebook(tmp_path / "dies.ipynb", code=["import os\nos._exit(1)"]),
             write_notebook(tmp_path / "fails.ipynb", code=["raise ValueError('no')"]),
             write_notebook(tmp_path / "fine.ipynb", code=["x = 1"])]
    timed = env.time_notebooks(paths, quick=True, timeout=120)
    assert [name for name, _ in timed] == ["fine.ipynb"]
    printed = capsys.readouterr().out
    assert "dies.ipynb: FAILED, not timed: DeadKernelError" in printed
    assert "fails.ipynb: FAILED, not timed: CellExecutionError" in printed
