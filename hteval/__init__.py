"""hteval: Bayesian random-matrix analysis of neural-network weight spectra.

Importing hteval has no side effects (no logging or warnings configuration; only the command line configures
those) and is cheap: each public name is imported from its module on first use, so that JAX, numpyro, ArviZ and
matplotlib load only when something needs them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Analysis": "hteval.analysis",
    "analyze": "hteval.analysis",
    "load_analysis": "hteval.analysis",
    "Comparison": "hteval.model_comparison",
    "compare": "hteval.model_comparison",
    "HTMP": "hteval.densities.htmp",
    "htmp_cdf": "hteval.densities.htmp",
    "htmp_icdf": "hteval.densities.htmp",
    "htmp_log_cdf": "hteval.densities.htmp",
    "htmp_log_sf": "hteval.densities.htmp",
    "htmp_logpdf": "hteval.densities.htmp",
    "InverseHTMP": "hteval.densities.inverse_htmp",
    "inverse_htmp_cdf": "hteval.densities.inverse_htmp",
    "inverse_htmp_log_cdf": "hteval.densities.inverse_htmp",
    "inverse_htmp_logpdf": "hteval.densities.inverse_htmp",
    "MarchenkoPastur": "hteval.densities.mp",
    "mp_cdf": "hteval.densities.mp",
    "mp_icdf": "hteval.densities.mp",
    "mp_logpdf": "hteval.densities.mp",
    "HtevalError": "hteval.errors",
    "InputError": "hteval.errors",
    "OutputError": "hteval.errors",
    "RunMismatchError": "hteval.errors",
    "LayerSkipped": "hteval.errors",
    "FitResult": "hteval.infer",
    "fit": "hteval.infer",
    "sample_htmp_spectra": "hteval.sampling",
    "sample_htmp_spectrum": "hteval.sampling",
    "sample_mp_spectrum": "hteval.sampling",
    "LayerSpectrum": "hteval.spectra",
    "load_spectra": "hteval.spectra",
    "spectrum": "hteval.spectra",
    "Tracker": "hteval.tracker",
}

__all__ = sorted([*_EXPORTS, "__version__"])
#: density functions that compute in float64 whatever the caller's JAX setting (`hteval.precision`)
_FLOAT64 = frozenset(n for n, module in _EXPORTS.items() if module.startswith("hteval.densities") and n.islower())


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hteval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _FLOAT64:
        from hteval.precision import in_float64

        value = in_float64(value)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
