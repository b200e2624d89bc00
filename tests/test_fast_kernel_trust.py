"""The compiled CPU kernel is loaded only if this package built it (issue 16): a library planted at
the cache path, a corrupt cache file or a folder other users can write never gets loaded (the
kernel is rebuilt, or built in a private folder), and a hanging compiler is stopped.

Every test runs against a temporary cache folder (``DSOS_CACHE``) and quick ``-O0`` builds."""
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import fast
from helpers.fast import cpu_kernel
from helpers.nca import NCA

QUICK_FLAGS = (["-O0", "-fopenmp"], ["-O0"])      # the same shape as FLAG_SETS: OpenMP first


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh kernel cache folder (not created yet), quick builds, and the real kernel back afterwards."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("DSOS_CACHE", str(folder))
    monkeypatch.delenv("DSOS_COMPILE_TIMEOUT", raising=False)
    monkeypatch.delenv("DSOS_CPU_KERNEL", raising=False)
    monkeypatch.setattr(cpu_kernel, "FLAG_SETS", QUICK_FLAGS)
    cpu_kernel.reset()
    yield folder
    monkeypatch.undo()
    cpu_kernel.reset()
    assert cpu_kernel.available()


def compiler():
    found = cpu_kernel.find_compiler()
    assert found, "these tests need the C++ compiler the kernel needs"
    return found


def plant(path: Path, marker: Path) -> Path:
    """Compile, at ``path``, a library whose constructor (run by loading it) creates ``marker``."""
    source = path.parent / "planted.cpp"
    source.write_text('#include <cstdio>\n__attribute__((constructor)) static void ran() {\n'
                      f'    std::fclose(std::fopen("{marker}", "w"));\n}}\n'
                      'extern "C" int nca_kernel_version() { return 999; }\n')
    subprocess.run([compiler(), "-shared", "-fPIC", str(source), "-o", str(path)], check=True)
    source.unlink()
    return path


def forge_record(library: Path) -> None:
    """What someone who can write the folder could also write: a record matching the planted bytes."""
    key = cpu_kernel.build_key(compiler(), QUICK_FLAGS[0])
    record = {"build_key": key, "library_sha256": cpu_kernel.file_sha256(library)}
    cpu_kernel.record_path(library).write_text(json.dumps(record))


def assert_genuine_kernel_loaded(folder: Path) -> Path:
    assert cpu_kernel.load() is not None, cpu_kernel.load_error()
    info = cpu_kernel.library_info()
    assert info["flags"] == QUICK_FLAGS[0] and info["failures"] == [], "the OpenMP build, not a downgrade"
    assert info["path"].parent == folder.resolve() or info["path"].parent == folder
    key = cpu_kernel.build_key(compiler(), QUICK_FLAGS[0])
    assert cpu_kernel.untrusted_because(info["path"], key) is None
    written = re.search(r"nca_kernel_version\(\) \{ return (\d+); \}", cpu_kernel.SOURCE.read_text())
    assert cpu_kernel.version() == int(written.group(1))            # the planted library said 999
    return info["path"]


def test_a_build_is_recorded_with_its_key_and_its_own_hash(cache):
    path = assert_genuine_kernel_loaded(cache)
    record = json.loads(cpu_kernel.record_path(path).read_text())
    assert record["build_key"] == cpu_kernel.build_key(compiler(), QUICK_FLAGS[0])
    assert path.name == f"nca_cpu_{record['build_key'][:16]}.so"
    assert record["library_sha256"] == cpu_kernel.file_sha256(path)
    assert record["flags"] == QUICK_FLAGS[0]
    # the key changes with the source and with the flags
    assert cpu_kernel.build_key(compiler(), QUICK_FLAGS[1]) != record["build_key"]
    assert not stat.S_IMODE(cache.stat().st_mode) & 0o022


def test_a_library_planted_at_the_cache_path_is_rebuilt_not_loaded(cache, tmp_path):
    """Before: a loadable library at the cache path was executed (its constructor ran)."""
    cache.mkdir(mode=0o700)
    marker = tmp_path / "planted_code_ran"
    target = cpu_kernel.library_path(compiler(), QUICK_FLAGS[0], cache)
    plant(target, marker)
    path = assert_genuine_kernel_loaded(cache)
    assert path == target and not marker.exists()
    # a record that names another build, or is not JSON, is no better
    for record in ('{"build_key": "0000", "library_sha256": "0000"}', "not json"):
        plant(target, marker)
        cpu_kernel.record_path(target).write_text(record)
        cpu_kernel.reset()
        assert_genuine_kernel_loaded(cache)
        assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_cache_file_is_repaired_not_downgraded(cache, damage):
    """Before: a corrupt build failed to load and the single-threaded build was used, forever."""
    cache.mkdir(mode=0o700)
    path = cpu_kernel.compile_library(compiler(), QUICK_FLAGS[0], cache)    # built, not loaded yet
    good = path.read_bytes()
    path.write_bytes({"truncated": good[:len(good) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    assert assert_genuine_kernel_loaded(cache) == path
    assert cpu_kernel.file_sha256(path) == json.loads(cpu_kernel.record_path(path).read_text())["library_sha256"]


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_folder_other_users_can_write_is_never_loaded_from(cache, tmp_path, mode):
    """Even a library with a matching record (anyone who can write the folder can write both) is
    not loaded from a group- or world-writable cache: the kernel is built in a private folder."""
    cache.mkdir(mode=0o700)
    marker = tmp_path / "planted_code_ran"
    target = plant(cpu_kernel.library_path(compiler(), QUICK_FLAGS[0], cache), marker)
    forge_record(target)
    assert cpu_kernel.untrusted_because(target, cpu_kernel.build_key(compiler(), QUICK_FLAGS[0])) is None
    cache.chmod(mode)
    with pytest.warns(RuntimeWarning, match="can be written by other users"):
        assert cpu_kernel.load() is not None
    info = cpu_kernel.library_info()
    assert info["path"].parent != cache and not marker.exists()
    assert cpu_kernel.folder_problem(info["path"].parent) is None
    assert stat.S_IMODE(info["path"].parent.stat().st_mode) == 0o700


def test_folders_owned_by_others_or_below_a_writable_folder_are_unsafe(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert cpu_kernel.folder_problem(mine) is None
    assert "owned by another user" in cpu_kernel.folder_problem(mine, uid=os.getuid() + 1)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    inner = shared / "inner"
    inner.mkdir(mode=0o700)
    assert "a folder above it, can be written by other users" in cpu_kernel.folder_problem(inner)
    shared.chmod(0o1777)                               # sticky, like /tmp: others cannot rename ours
    assert cpu_kernel.folder_problem(inner) is None


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
def test_a_cache_owned_by_another_user_is_never_loaded_from(cache, tmp_path):
    cache.mkdir(mode=0o700)
    marker = tmp_path / "planted_code_ran"
    forge_record(plant(cpu_kernel.library_path(compiler(), QUICK_FLAGS[0], cache), marker))
    os.chown(cache, 65534, 65534)
    with pytest.warns(RuntimeWarning, match="owned by another user"):
        assert cpu_kernel.load() is not None
    assert cpu_kernel.library_info()["path"].parent != cache and not marker.exists()


def process_state(pid):
    """The one-letter state of a process from /proc ("R", "S", "Z", ...), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return None


def wait_until_dead(pid, seconds):
    """True once the process is gone or a zombie (dead, waiting to be reaped), within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process_state(pid) in (None, "Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_hanging_compiler_is_stopped_and_fast_falls_back(cache, tmp_path, monkeypatch):
    """Before: a compiler that hung blocked the first fast call for up to 15 minutes."""
    pid_file = tmp_path / "compiler.pid"
    script = tmp_path / "hanging-c++"
    script.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {pid_file}\nwait\n")   # the driver and a child
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("DSOS_COMPILE_TIMEOUT", "0.5")
    assert cpu_kernel.load() is None
    error = cpu_kernel.load_error()
    assert "took longer than 0.5 s" in error and "DSOS_COMPILE_TIMEOUT" in error and "PyTorch backend" in error
    # the compiler and what it started were killed (a zombie waiting for its parent is dead too)
    # SIGKILL is delivered asynchronously: on a busy machine the child can still be running ("R")
    # for a moment while it dies, so wait a few seconds for it to be gone (a live `sleep 600` never is)
    child = int(pid_file.read_text())
    if sys.platform.startswith("linux"):
        assert wait_until_dead(child, seconds=10), f"the compiler's child {child} is still alive"
    # fast falls back to the PyTorch backend, and says why the kernel is missing when asked for it
    assert not fast.uses_cpu_kernel()
    model = NCA()
    state = torch.rand(1, 12, 5, 6)
    with torch.no_grad():
        expected = model.rollout(state, 3, generator=torch.Generator().manual_seed(0))
        actual = fast.infer(model, state, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match="took longer"):
        fast.infer(model, state, 3, backend="kernel")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_compile_timeout_is_a_clear_error(cache, monkeypatch, value):
    monkeypatch.setenv("DSOS_COMPILE_TIMEOUT", value)
    with pytest.raises(ValueError, match="DSOS_COMPILE_TIMEOUT must be a positive number of seconds"):
        cpu_kernel.load()


def test_the_compile_timeout_defaults_to_two_minutes(monkeypatch):
    monkeypatch.delenv("DSOS_COMPILE_TIMEOUT", raising=False)
    assert cpu_kernel.compile_timeout() == 120
    monkeypatch.setenv("DSOS_COMPILE_TIMEOUT", "300")
    assert cpu_kernel.compile_timeout() == 300


def test_a_cache_path_that_cannot_be_created_builds_privately(cache, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DSOS_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        assert cpu_kernel.load() is not None
    assert cpu_kernel.folder_problem(cpu_kernel.library_info()["path"].parent) is None
