"""Shared code of the notebook series *Differentiable Self-Organizing Systems*.

One module per concern: ``env`` (device, quick/full mode, seeds, Colab set-up), ``display``
(images, grids, videos, live dashboard, weight views), ``data`` (the shipped textures), and the
modules the chapters add as they teach them (``nca``, ``losses``, ``train``, ``tasks``, ``export``).
Modules are imported explicitly, e.g. ``from helpers import env, display``.
"""
__version__ = "0.1.0"
