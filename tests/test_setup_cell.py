"""The Colab set-up cell (env.SETUP_CELL) run as Colab would run it, offline.

Each test runs the exact generated cell in a fresh Python process with a fake ``google.colab``
module, an empty working folder and this repository's own ``helpers`` hidden, so that only the
fetched copy can be imported. Local bare git repositories stand in for the remote: git's
``url.<local>.insteadOf`` maps the cell's default GitHub address onto one of them. The only
change to the cell's text is its clone folder (``/content/dsos`` becomes a temporary folder).
"""
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import env

pytestmark = pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
                                reason="git is not installed")

# The child process: hide this repository's helpers (editable install or path entry), pretend to
# be Colab, run the cell, then say which fetched version of the fake course was imported.
HARNESS = textwrap.dedent("""
    import importlib.util, os, sys
    root = os.path.realpath(sys.argv[2])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    if importlib.util.find_spec("helpers") is not None:
        sys.exit("cannot hide the repository's helpers package from the child process")
    sys.path.insert(0, sys.argv[3])
    import google.colab  # the fake: its presence in sys.modules is what the cell checks
    source = open(sys.argv[1]).read()
    exec(compile(source, "setup-cell", "exec"), {"__name__": "__main__"})
    from helpers import env
    print("IMPORTED", env.VERSION, os.path.dirname(os.path.dirname(env.__file__)))
""")


def git(*args, cwd=None):
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=git_env())
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout.strip()


def git_env(**extra):
    """No user or system git configuration; commits need a name."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    return {**clean, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org", **extra}


class FakeCourse:
    """A bare repository whose helpers/env.py names its version: commit() adds one."""

    def __init__(self, folder):
        self.work = folder / "work"
        self.bare = folder / "remote.git"
        self.work.mkdir(parents=True)
        git("init", "--quiet", "-b", "main", str(self.work))
        git("init", "--quiet", "--bare", "-b", "main", str(self.bare))
        (self.work / "helpers").mkdir()
        (self.work / "helpers" / "__init__.py").write_text("")

    @property
    def url(self):
        return self.bare.as_uri()

    def commit(self, version, tag=None):
        (self.work / "helpers" / "env.py").write_text(textwrap.dedent(f"""
            VERSION = {version!r}
            def setup():
                print("FAKE SETUP", VERSION)
                return {{}}
        """))
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", version, cwd=self.work)
        if tag:
            git("tag", tag, cwd=self.work)
        git("push", "--quiet", "--tags", self.url, "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def colab(tmp_path):
    """Runs the set-up cell as on Colab; returns a function (remote to map the default URL onto,
    extra environment) -> CompletedProcess. The clone folder is tmp_path/content/dsos."""
    fake = tmp_path / "fake_modules"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    clone = tmp_path / "content" / "dsos"
    assert env.SETUP_CELL.count(f'"{env.COLAB_CLONE_DIR}"') == 1
    cell = tmp_path / "setup_cell.py"
    cell.write_text(env.SETUP_CELL.replace(f'"{env.COLAB_CLONE_DIR}"', repr(str(clone))))
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    workdir = tmp_path / "empty_working_folder"
    workdir.mkdir()

    def run(default_remote=None, **extra):
        variables = {}
        if default_remote is not None:       # git rewrites the cell's default address to the local remote
            variables = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{default_remote.url}.insteadOf",
                         "GIT_CONFIG_VALUE_0": env.REPO_URL}
        child_env = git_env(**variables, **extra)
        for name in (env.REPO_URL_ENV, env.COURSE_REF_ENV, "PYTHONPATH"):
            if name not in extra:
                child_env.pop(name, None)
        return subprocess.run([sys.executable, str(harness), str(cell), str(env.REPO_ROOT), str(fake)],
                              cwd=workdir, env=child_env, capture_output=True, text=True, timeout=120)

    run.clone = clone
    return run


@pytest.fixture
def course(tmp_path):
    return FakeCourse(tmp_path / "course")


def head(folder):
    return git("rev-parse", "HEAD", cwd=folder)


def test_fresh_clone_fetches_the_pinned_version_not_the_newest(colab, course):
    pinned = course.commit("release", tag=env.COURSE_REF)
    course.commit("newer work on main")
    done = colab(course)
    assert done.returncode == 0, done.stderr
    assert f"IMPORTED release {colab.clone}" in done.stdout          # the fetched copy, not this repository
    assert head(colab.clone) == pinned
    assert f"Fetched the course {env.COURSE_REF} (commit {pinned[:7]})" in done.stdout
    assert env.REPO_URL in done.stdout                                 # says where it came from


def test_a_stale_clone_is_refreshed_to_the_pin(colab, course):
    old = course.commit("last year's course")
    colab.clone.parent.mkdir(parents=True)
    git("clone", "--quiet", course.url, str(colab.clone))
    assert head(colab.clone) == old
    pinned = course.commit("this year's course", tag=env.COURSE_REF)
    done = colab(course)
    assert done.returncode == 0, done.stderr
    assert head(colab.clone) == pinned and "IMPORTED this year's course" in done.stdout
    assert f"replacing commit {old[:7]}" in done.stdout
    again = colab(course)                                              # now it matches: nothing to do
    assert again.returncode == 0 and f"is at {env.COURSE_REF} (commit {pinned[:7]})" in again.stdout


def test_a_fix_pushed_to_a_followed_branch_reaches_an_existing_clone(colab, course):
    course.commit("morning")
    assert colab(course, DSOS_COURSE_REF="main").returncode == 0
    fix = course.commit("fix pushed during the tutorial")
    done = colab(course, DSOS_COURSE_REF="main")
    assert done.returncode == 0, done.stderr
    assert head(colab.clone) == fix and "IMPORTED fix pushed during the tutorial" in done.stdout


def test_the_repository_url_is_overridden_by_the_environment(colab, course, tmp_path):
    course.commit("the default remote", tag=env.COURSE_REF)
    fork = FakeCourse(tmp_path / "fork")
    forked = fork.commit("a fork", tag=env.COURSE_REF)
    done = colab(course, DSOS_REPO_URL=fork.url)
    assert done.returncode == 0, done.stderr
    assert head(colab.clone) == forked and "IMPORTED a fork" in done.stdout and fork.url in done.stdout


def test_a_missing_version_tag_falls_back_to_the_newest_commit_and_says_so(colab, course):
    newest = course.commit("untagged")
    done = colab(course)
    assert done.returncode == 0, done.stderr
    assert head(colab.clone) == newest
    assert f"has no version {env.COURSE_REF!r}" in done.stdout and "not pinned" in done.stdout


def test_an_unreachable_repository_stops_with_what_failed_and_what_to_do(colab, tmp_path):
    nowhere = (tmp_path / "no_such_repository.git").as_uri()
    done = colab(DSOS_REPO_URL=nowhere)
    assert done.returncode != 0 and "IMPORTED" not in done.stdout
    message = done.stderr
    assert "RuntimeError: The set-up cell could not fetch the course from " + nowhere in message
    assert f"(version {env.COURSE_REF!r})" in message
    assert "git said: fatal:" in message                               # git's own reason
    assert env.REPO_URL_ENV in message and "What to do" in message      # and how to point it elsewhere


def test_an_unreachable_repository_keeps_an_existing_copy_with_a_warning(colab, course, tmp_path):
    pinned = course.commit("release", tag=env.COURSE_REF)
    assert colab(course).returncode == 0
    done = colab(DSOS_REPO_URL=(tmp_path / "offline.git").as_uri())
    assert done.returncode == 0, done.stderr
    assert "Warning: could not fetch" in done.stdout and f"commit {pinned[:7]}" in done.stdout
    assert "IMPORTED release" in done.stdout


def test_local_changes_in_the_clone_are_not_overwritten(colab, course):
    old = course.commit("old")
    colab.clone.parent.mkdir(parents=True)
    git("clone", "--quiet", course.url, str(colab.clone))
    (colab.clone / "helpers" / "env.py").write_text("VERSION = 'edited by the learner'\ndef setup():\n    return {}\n")
    course.commit("new", tag=env.COURSE_REF)
    done = colab(course)
    assert done.returncode == 0, done.stderr
    assert head(colab.clone) == old and "could not update" in done.stdout and "checkout --force" in done.stdout
    assert "IMPORTED edited by the learner" in done.stdout
