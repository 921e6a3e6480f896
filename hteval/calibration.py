"""Whether a model's credible intervals are calibrated, as measured by simulation-based calibration (SBC).

Every output that prints an interval (summary.json, layers.csv, report.md, the figures, the command line) says
which kind it is, from here. `htmp-exact` is the one likelihood whose intervals were checked and found calibrated.
The others treat eigenvalues as iid draws from the one-point density: eigenvalues of one matrix repel, so the
iid likelihood misstates how much one spectrum tells (SPEC section 4). For `htmp` this was measured: its
intervals are too wide. The other iid models were not simulated; they share the assumption, so their intervals are
labelled uncalibrated too.
"""

from __future__ import annotations

from hteval import names

#: measured with `benchmarks/sbc.py` (docs/validation.md): gamma 0.5, exact draws (4 x 1000)
_EXACT = ("calibrated: exact finite-size likelihood; simulation-based calibration (1000 simulations each at M = 100, "
          "M = 500 and 9 conv slices of M = 30) put the truth inside 88.8-90.3% of 90% intervals and 48.4-50.0% of "
          "50% intervals")
_IID_HTMP = ("uncalibrated: iid likelihood, which ignores eigenvalue repulsion; simulation-based calibration (100 "
             "simulations at M = 100) put the truth inside 94% (kappa) and 97% (scale) of 90% intervals: too wide. "
             "Use htmp-exact for calibrated intervals")
_IID = ("uncalibrated: iid likelihood, which ignores eigenvalue repulsion (SPEC section 4); not checked by "
        "simulation-based calibration")

_NOTES = {"htmp-exact": _EXACT, "htmp": _IID_HTMP}


def intervals(model: str) -> str:
    """names.INTERVALS_CALIBRATED or names.INTERVALS_UNCALIBRATED: the value of the `intervals` column and key."""
    return names.INTERVALS_CALIBRATED if model in CALIBRATED_MODELS else names.INTERVALS_UNCALIBRATED


def note(model: str) -> str:
    """One sentence on the model's intervals and the measurement behind it."""
    return _NOTES.get(model, _IID)


CALIBRATED_MODELS = frozenset({"htmp-exact"})
