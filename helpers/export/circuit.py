"""The rule drawn as a circuit: state registers, their fixed filters, adders and the feedback loop."""
from __future__ import annotations

import numpy as np

from ..nca import CHANNELS
from .quantize import INPUTS, QuantizedRule


def draw_circuit(rule: QuantizedRule, keep: int = 60, ax=None):
    """Draw the rule as a circuit: 12 state registers, their fixed filters, 12 adders and the feedback.

    Only the ``keep`` strongest of the 576 weights are drawn (all of them would be a grey blur):
    green lines for positive coefficients, red for negative, width proportional to the size; solid
    lines carry the positive part (relu) of an input, dashed lines its negative part. The blue loops
    under the diagram carry each adder's output back into its register. Returns the axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path as CurvePath

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 9))
    weight = rule.weight_codes.astype(float) * rule.weight_scale
    rows = np.arange(CHANNELS)[::-1] * 1.0  # channel 0 at the top
    x_state, x_filter, x_sum = 0.0, 1.3, 5.0
    filter_rows = rows - 0.5  # filters sit between the registers, so register -> adder lines pass them by
    filter_names = ["∇²"] * 4 + ["∂x"] * 4 + ["∂y"] * 4

    def node(x, y, text, color):
        ax.add_patch(FancyBboxPatch((x - 0.32, y - 0.22), 0.64, 0.44, boxstyle="round,pad=0.02", fc=color,
                                    ec="black", lw=0.8, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=4)

    # The 48 inputs of the 1x1 convolution: positive parts of (state, perception), then negative parts.
    sources = [(x_state, rows[c]) for c in range(CHANNELS)] + [(x_filter, filter_rows[c]) for c in range(CHANNELS)]
    sources = sources * 2
    strongest = np.argsort(np.abs(weight), axis=None)[::-1][:keep]
    largest = np.abs(weight).max() or 1.0
    for flat in strongest:
        out, i = divmod(int(flat), INPUTS)
        (x0, y0), value = sources[i], weight[out, i]
        ax.add_patch(FancyArrowPatch((x0 + 0.33, y0), (x_sum - 0.33, rows[out]), arrowstyle="-|>", mutation_scale=7,
                                     color="tab:green" if value > 0 else "tab:red", lw=0.4 + 2.6 * abs(value) / largest,
                                     ls="-" if i < 2 * CHANNELS else "--", alpha=0.75, zorder=1))
    bottom = rows.min() - 1.0
    for c in range(CHANNELS):
        node(x_state, rows[c], f"s{c}", "#cfe2ff")
        node(x_filter, filter_rows[c], f"{filter_names[c]} s{c}", "#eeeeee")
        node(x_sum, rows[c], f"Σ → Δs{c}", "#fff3c4")
        ax.add_patch(FancyArrowPatch((x_state + 0.2, rows[c] - 0.22), (x_filter - 0.33, filter_rows[c]),
                                     arrowstyle="-|>", mutation_scale=7, color="grey", lw=0.8, zorder=2))
        # Feedback: the adder's output goes round and back into register c (s <- s + Δs, next step).
        right, left, low = x_sum + 0.45 + 0.07 * c, x_state - 0.45 - 0.07 * c, bottom - 0.12 * c
        loop = CurvePath([(x_sum + 0.33, rows[c]), (right, rows[c]), (right, low), (left, low), (left, rows[c]),
                          (x_state - 0.33, rows[c])])
        ax.add_patch(FancyArrowPatch(path=loop, arrowstyle="-|>", mutation_scale=7, color="tab:blue", lw=0.7,
                                     alpha=0.55, zorder=0))
    ax.plot([], [], color="tab:green", lw=2, label="positive coefficient")
    ax.plot([], [], color="tab:red", lw=2, label="negative coefficient")
    ax.plot([], [], color="black", ls="--", lw=1, label="from the negative part of an input")
    ax.plot([], [], color="tab:blue", lw=1, alpha=0.6, label="feedback: s ← s + Δs every step")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    ax.text(x_state, rows[0] + 0.6, "state\nregisters", ha="center", fontsize=9)
    ax.text(x_filter, rows[0] + 0.6, "fixed filters\n(3×3 neighbours)", ha="center", fontsize=9)
    ax.text(x_sum, rows[0] + 0.6, "adders\n(48 inputs + bias)", ha="center", fontsize=9)
    ax.set_xlim(x_state - 1.5, x_sum + 1.5)
    ax.set_ylim(bottom - 0.12 * CHANNELS - 0.3, rows[0] + 1.4)
    ax.set_axis_off()
    ax.set_title(f"the rule as a circuit: the {keep} strongest of {weight.size} weights")
    return ax
