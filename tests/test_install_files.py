"""The install files agree: Binder's CPU builds are requirements.txt's versions, its heavy layer has
no local paths (so Binder caches it), postBuild installs the course; README links them."""
import os
import re

from helpers import env

ROOT = env.REPO_ROOT


def requirement_lines(path):
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def pins(lines):
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups() for line in lines if "==" in line)


def test_binder_installs_the_cpu_builds_of_the_tested_torch_pair():
    binder = requirement_lines(ROOT / "binder" / "requirements.txt")
    laptop = requirement_lines(ROOT / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in binder
    assert pins(binder)["torch"] == pins(laptop)["torch"] + "+cpu"
    assert pins(binder)["torchvision"] == pins(laptop)["torchvision"] + "+cpu"


def test_binder_requirements_have_no_local_paths_so_the_layer_is_cached():
    for line in requirement_lines(ROOT / "binder" / "requirements.txt"):
        assert not line.startswith(("-e", "-r", "-c", ".", "/", "file:")), line


def test_binder_needs_what_the_notebooks_need():
    binder = {re.split(r"[=<>\[ ]", line)[0].lower() for line in requirement_lines(ROOT / "binder" / "requirements.txt")
              if not line.startswith("-")}
    for _, pip_name in env.NOTEBOOK_PACKAGES:
        assert pip_name.lower() in binder, f"binder/requirements.txt lacks {pip_name}"


def test_postbuild_installs_the_course_after_the_dependencies():
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert text.startswith("#!/bin/bash") and "set -euo pipefail" in text
    assert "pip install --no-deps -e ." in text


def test_readme_has_the_binder_badge_the_cpu_install_and_the_right_nbval_link():
    readme = (ROOT / "README.md").read_text()
    assert env.binder_url() in readme and "mybinder.org/badge_logo.svg" in readme
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in readme
    assert "https://github.com/computationalmodelling/nbval" in readme and "computationalmystic" not in readme
    for variable in (env.REPO_URL_ENV, env.COURSE_REF_ENV, "DSOS_QUICK"):
        assert variable in readme
    assert ".ci/colab-check" in readme and "--peak-memory" in readme


def test_the_colab_check_script_pins_colabs_versions():
    script = (ROOT / ".ci" / "colab-check").read_text()
    assert os.access(ROOT / ".ci" / "colab-check", os.X_OK)
    for pin in ("torch==2.11.0", "torchvision==0.26.0", "ipywidgets==7.7.1", "ipython==7.34.0"):
        assert pin in script
