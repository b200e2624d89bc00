"""Test configuration.

* Every test, and every notebook kernel nbval starts, runs in quick mode: the environment is set
  here, at import time, before any kernel starts, so the notebooks inherit DSOS_QUICK=1 (small
  grids, few iterations) whatever the machine has. A rehearsal switch left in the shell
  (DSOS_REHEARSAL) is removed for the same reason; the rehearsal's own tests
  (tests/test_rehearsal.py, marker ``rehearsal``) set both variables for the kernels they start.
* Unit tests run torch on one thread (see ``one_thread``).
"""
import os

import pytest
import torch

os.environ["DSOS_QUICK"] = "1"
os.environ.pop("DSOS_REHEARSAL", None)


@pytest.fixture(autouse=True)
def one_thread():
    """Unit tests run torch on one thread: their grids are small, and there several threads mostly
    wait for each other (far more so on a shared 2-core machine). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
