"""Shared code of the notebook series *Differentiable Self-Organizing Systems*.

One job per module (README's Layout section lists them all): ``env`` (where it runs), ``display``
(pictures and videos), ``data`` (shipped assets), ``nca`` (the rule of chapter 03), ``train`` (the
pool loop), ``losses``, ``fast`` (faster rollouts), ``export`` (shader, C, page), ``tasks`` (one
module per task: ``texture``, ``mst``), ``cli`` (``python -m helpers``), ``bench``, ``toys`` and
``widgets`` (chapter 02). Modules are imported explicitly, e.g. ``from helpers import env, display``.
"""
__version__ = "0.1.0"
