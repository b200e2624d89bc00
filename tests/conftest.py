"""Test configuration: every test, and every notebook kernel nbval starts, runs in quick mode.

The environment is set here, at import time, before any kernel starts, so the notebooks
executed by nbval inherit DSOS_QUICK=1 (small grids, few iterations) whatever the machine has.
"""
import os

os.environ["DSOS_QUICK"] = "1"
