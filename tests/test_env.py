"""helpers.env: device choice, quick/full switch, seeding, Colab set-up, the set-up cell."""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import env


def test_quick_mode_is_forced_in_tests():
    assert env.is_quick() is True
    assert env.mode_name() == "quick"


@pytest.mark.parametrize("value, quick", [("1", True), ("0", False), ("true", True), ("off", False), (" 1 ", True)])
def test_quick_switch_reads_the_environment(monkeypatch, value, quick):
    monkeypatch.setenv("DSOS_QUICK", value)
    assert env.is_quick() is quick
    assert env.pick(quick="q", full="f") == ("q" if quick else "f")


def test_quick_is_the_default_everywhere_until_full_mode_is_measured_on_a_gpu(monkeypatch):
    monkeypatch.delenv("DSOS_QUICK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.is_quick() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.GPU_DEFAULT_MODE == "quick" and env.is_quick() is True     # a Colab GPU runtime: the tutorial size
    monkeypatch.setattr(env, "GPU_DEFAULT_MODE", "full")                  # the one constant that changes it
    assert env.is_quick() is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.is_quick() is True                                         # never full by default on a CPU
    monkeypatch.setenv("DSOS_QUICK", "0")
    assert env.is_quick() is False                                        # the switch to the reference budgets


def test_mode_advice_says_what_the_mode_does_and_how_to_switch(monkeypatch):
    monkeypatch.delenv("DSOS_QUICK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = env.mode_advice(torch.device("cuda"), colab=True)
    assert on_gpu.startswith("quick mode") and "DSOS_QUICK=0" in on_gpu and "not measured" in on_gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_colab_cpu = env.mode_advice(torch.device("cpu"), colab=True)
    assert "Change runtime type" in on_colab_cpu and "T4 GPU" in on_colab_cpu
    assert "Change runtime type" not in env.mode_advice(torch.device("cpu"), colab=False)
    monkeypatch.setenv("DSOS_QUICK", "0")
    full = env.mode_advice(torch.device("cpu"), colab=False)
    assert full.startswith("full mode") and "DSOS_QUICK=1" in full


def test_course_version_is_the_package_version_and_the_pin_of_the_setup_cell():
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+
    project = tomllib.loads((env.REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == env.COURSE_VERSION and env.COURSE_REF == "v" + env.COURSE_VERSION
    assert f'or "{env.COURSE_REF}"' in env.SETUP_CELL and f'or "{env.REPO_URL}"' in env.SETUP_CELL
    assert f'os.environ.get("{env.REPO_URL_ENV}")' in env.SETUP_CELL
    assert f'os.environ.get("{env.COURSE_REF_ENV}")' in env.SETUP_CELL


def test_the_setup_cell_never_installs_torch_numpy_or_matplotlib():
    assert "pip" not in env.SETUP_CELL                    # installing is env.setup's job, which never does
    assert {"torch", "numpy", "matplotlib"} <= env.NEVER_INSTALL


def test_bad_quick_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DSOS_QUICK", "maybe")
    with pytest.raises(ValueError, match="DSOS_QUICK='maybe'.*DSOS_QUICK=1"):
        env.is_quick()


def test_device_falls_back_to_cpu(monkeypatch):
    monkeypatch.delenv("DSOS_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    assert env.get_device() == torch.device("cpu")


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv("DSOS_DEVICE", raising=False)
    monkeypatch.setattr(env, "_mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.get_device().type == "mps"


def test_forced_device(monkeypatch):
    monkeypatch.setenv("DSOS_DEVICE", "cpu")
    assert env.get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        env.get_device("cuda")


def test_seed_everything_makes_all_generators_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    env.seed_everything(123)
    first = draw()
    env.seed_everything(123)
    second = draw()
    env.seed_everything(124)
    third = draw()
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    assert first[0] != third[0] and first[1] != third[1] and not torch.equal(first[2], third[2])


def test_seed_everything_returns_a_seeded_generator():
    a = torch.rand(4, generator=env.seed_everything(5))
    b = torch.rand(4, generator=env.seed_everything(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [1.5, "3", -1, 2**32, True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed"):
        env.seed_everything(bad)


def test_colab_detection(monkeypatch):
    assert env.in_colab() is ("google.colab" in sys.modules)
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert env.in_colab() is True


def test_install_missing_installs_only_what_is_missing():
    calls = []
    packages = [("json", "json-is-there"), ("surely_not_a_module_dsos", "missing-pkg"), ("torch", "torch")]
    installed = env.install_missing(packages, runner=lambda args, check: calls.append(args))
    assert installed == ["missing-pkg"]
    assert len(calls) == 1 and calls[0][-1] == "missing-pkg" and "torch" not in calls[0]


def test_install_missing_never_installs_torch_numpy_matplotlib():
    calls = []
    packages = [("surely_not_torch_dsos", "torch"), ("surely_not_numpy_dsos", "numpy")]
    assert env.install_missing(packages, runner=lambda args, check: calls.append(args)) == []
    assert calls == []


def test_setup_reports_device_and_mode(capsys):
    info = env.setup()
    printed = capsys.readouterr().out
    assert info["quick"] is True and info["installed"] == []
    assert "mode: quick" in printed and str(info["device"].type) in printed


def test_versions_lists_the_main_libraries():
    found = env.versions()
    assert found["torch"] == torch.__version__ and found["numpy"] == np.__version__
    assert found["python"].count(".") == 2


def test_data_dir(monkeypatch, tmp_path):
    assert (env.data_dir() / "textures").is_dir()
    monkeypatch.setenv("DSOS_DATA", str(tmp_path))
    assert env.data_dir() == tmp_path
    monkeypatch.setenv("DSOS_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="DSOS_DATA"):
        env.data_dir()


def test_colab_badge_points_at_the_repository():
    badge = env.colab_badge("03_neural_ca_textures.ipynb")
    owner_repo = env.REPO_URL.removeprefix("https://github.com/")
    assert f"colab.research.google.com/github/{owner_repo}/blob/main/notebooks/03_neural_ca_textures.ipynb" in badge


NOTEBOOKS = sorted((env.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert any(path.name == "00_start_here.ipynb" for path in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_title_badge_and_the_one_setup_cell(path):
    cells = json.loads(path.read_text())["cells"]
    title, setup = cells[0], cells[1]
    assert title["cell_type"] == "markdown" and "".join(title["source"]).lstrip().startswith("# ")
    assert env.colab_url(path.name) in "".join(title["source"])
    assert setup["cell_type"] == "code" and "".join(setup["source"]) == env.SETUP_CELL
    assert env.REPO_URL in env.SETUP_CELL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has stored outputs"


APPENDICES = [path for path in NOTEBOOKS if path.stem.endswith("_appendix")]
LESSONS = [path for path in NOTEBOOKS if path not in APPENDICES]
CHAPTERS = [path for path in LESSONS if not path.name.startswith("00_")]   # 00 is a set-up check, not a chapter
#: Chapters whose lesson follows the live-session limits (DESIGN.md principle 2: at most about 35 cells,
#: 2 to 4 exercises, the deeper material in NN_name_appendix.ipynb).
LESSON_CELLS, EXERCISES_PER_LESSON = 35, (2, 4)
#: Chapters not converted yet, each with the issue that converts it: they keep the older skeleton until then.
PENDING_LESSONS: dict[str, str] = {}


def _sources(path):
    cells = json.loads(path.read_text())["cells"]
    return cells, ["".join(cell["source"]) for cell in cells]


def _check_configuration_and_sections(path):
    """"## 0 · Configuration" with ONE code cell that holds the preamble (env.start_chapter), numbered
    sections in order; no preamble repeated elsewhere. Returns the level-2 headings."""
    cells, sources = _sources(path)
    assert cells[2]["cell_type"] == "markdown" and sources[2].startswith("## 0 · Configuration")
    assert cells[3]["cell_type"] == "code" and "env.start_chapter(" in sources[3]
    for index, source in enumerate(sources):
        if cells[index]["cell_type"] == "code" and index != 3:
            for preamble in ("env.start_chapter(", "torch.set_num_threads(", "torch.set_flush_denormal("):
                assert preamble not in source, f"{path.name} cell {index} repeats the preamble: {preamble}"
    headings = [source.split("\n")[0] for source in sources if source.startswith("## ")]
    numbers = [int(heading[3]) for heading in headings if heading[3].isdigit()]
    assert numbers == sorted(numbers) and numbers[0] == 0, f"{path.name}: sections out of order {headings}"
    assert len(numbers) >= 2, f"{path.name}: no numbered section after the configuration"
    return headings


def test_the_lessons_and_appendices_are_the_chapters_listed():
    assert {path.name[:2] for path in CHAPTERS} == {f"{n:02d}" for n in range(1, 9)}
    for appendix in APPENDICES:             # an appendix belongs to a lesson: NN_name_appendix beside NN_name
        assert appendix.with_name(appendix.name.replace("_appendix", "")) in LESSONS, appendix.name
    assert set(PENDING_LESSONS) <= {path.name[:2] for path in CHAPTERS}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_has_the_one_skeleton(path):
    """Title, set-up cell, "## 0 · Configuration" with ONE code cell that holds the preamble
    (env.start_chapter), numbered sections, then "Things to try"; no preamble repeated elsewhere.
    A converted chapter (not in PENDING_LESSONS) is a lesson for a live session: at most LESSON_CELLS
    cells, 2 to 4 exercises (a check cell each, and a strict solution), a summary and references."""
    headings = _check_configuration_and_sections(path)
    assert any(heading.startswith("## Things to try") for heading in headings)
    if path.name[:2] in PENDING_LESSONS:
        return
    cells, sources = _sources(path)
    assert len(cells) <= LESSON_CELLS, f"{path.name} has {len(cells)} cells; a lesson has at most {LESSON_CELLS}"
    checks = sum(source.count("exercises.check(") - source.count("strict=True") for source in sources)
    solutions = sum(source.count("strict=True") for source in sources)
    low, high = EXERCISES_PER_LESSON
    assert low <= checks <= high and solutions == checks, f"{path.name}: {checks} exercises, {solutions} solutions"
    text = "\n".join(sources)
    assert "## Summary" in text and "## References" in text
    assert path.with_name(path.stem + "_appendix.ipynb") in APPENDICES, f"{path.name} has no appendix"


@pytest.mark.parametrize("path", APPENDICES, ids=lambda p: p.name)
def test_every_appendix_has_a_title_the_setup_cell_and_numbered_sections(path):
    """The title cell (badge) and the set-up cell are checked for every notebook above; an appendix also
    names its lesson in the title, has the configuration cell and numbered sections, and no exercises."""
    cells, sources = _sources(path)
    lesson = path.name.replace("_appendix", "")
    assert sources[0].startswith("# ") and lesson in sources[0], f"{path.name}: the title should link {lesson}"
    _check_configuration_and_sections(path)
    assert not any("exercises.check(" in source for source in sources), "exercises belong in the lesson"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_cells_have_unique_ids(path):
    ids = [cell.get("id") for cell in json.loads(path.read_text())["cells"]]
    assert None not in ids and len(set(ids)) == len(ids)


def test_write_setup_cells_rewrites_the_cell(tmp_path):
    source = NOTEBOOKS[0]
    notebook = json.loads(source.read_text())
    notebook["cells"][1]["source"] = ["# Set-up (the same cell in every chapter). an old version\n", "print(1)"]
    (tmp_path / source.name).write_text(json.dumps(notebook))
    assert env.write_setup_cells(tmp_path) == [tmp_path / source.name]
    rewritten = json.loads((tmp_path / source.name).read_text())
    assert "".join(rewritten["cells"][1]["source"]) == env.SETUP_CELL


def test_write_setup_cells_refuses_a_notebook_without_one(tmp_path):
    (tmp_path / "09_x.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["1"]}]}))
    with pytest.raises(ValueError, match="no set-up cell"):
        env.write_setup_cells(tmp_path)


def test_setup_cell_runs_outside_colab(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(env.REPO_ROOT / "notebooks")
    exec(compile(env.SETUP_CELL, "setup-cell", "exec"), {})
    assert "helpers ready (local)" in capsys.readouterr().out


def test_start_chapter_seeds_flushes_denormals_and_picks_threads(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("DSOS_QUICK", "1")
        monkeypatch.setenv("DSOS_DEVICE", "cpu")
        device = env.start_chapter(seed=7)
        first = torch.rand(3)
        assert device.type == "cpu" and torch.get_num_threads() == 1      # quick mode on a CPU: one thread
        assert "seed: 7" in capsys.readouterr().out
        env.start_chapter(seed=7, threads=None, verbose=False)
        assert torch.equal(torch.rand(3), first)                          # seeded again: the same numbers
        assert torch.tensor(1e-40).item() == 0.0                          # denormals flushed to zero
        env.start_chapter(seed=0, threads=2, verbose=False)
        assert torch.get_num_threads() == 2
        for bad in (0, "many", True):
            with pytest.raises(ValueError, match="threads"):
                env.start_chapter(threads=bad, verbose=False)
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)


def test_numpy_reads_its_float_limits_before_denormals_are_flushed(monkeypatch):
    """With flushing on, NumPy <= 2.3 (Colab: 2.1) warns "smallest subnormal ... is zero" when it
    first computes finfo of a type; flush_denormals must fill NumPy's finfo cache first."""
    seen_when_flushing = []

    def recording_flush(on):
        seen_when_flushing.append({dtype for dtype in np.finfo._finfo_cache if isinstance(dtype, np.dtype)})
        return True

    monkeypatch.setattr(np.finfo, "_finfo_cache", {})     # as in a fresh process: nothing computed yet
    monkeypatch.setattr(torch, "set_flush_denormal", recording_flush)
    monkeypatch.setenv("DSOS_DEVICE", "cpu")
    env.start_chapter(seed=0, threads=None, verbose=False)
    assert len(seen_when_flushing) == 1
    assert {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)} <= seen_when_flushing[0]


def test_starting_a_chapter_prints_no_numpy_subnormal_warning():
    code = ("import warnings; warnings.simplefilter('always')\n"
            "from helpers import env; env.start_chapter(verbose=False)\n"
            "import numpy as np, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
            "[np.finfo(t) for t in (np.float16, np.float32, np.float64, np.complex64, np.longdouble)]\n"
            "plt.plot([0, 1e-30]); plt.savefig(__import__('io').BytesIO())\n"
            "assert __import__('torch').tensor(1e-40).item() == 0.0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=env.REPO_ROOT,
                          env={**os.environ, "DSOS_DEVICE": "cpu", "DSOS_QUICK": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "subnormal" not in done.stderr


@pytest.mark.parametrize("name", ["meta", "cpu:0x", "tpu"])
def test_devices_that_cannot_run_the_course_are_refused(monkeypatch, name):
    monkeypatch.setenv("DSOS_DEVICE", name)
    with pytest.raises((ValueError, RuntimeError)):
        env.get_device()
