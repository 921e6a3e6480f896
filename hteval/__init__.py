"""hteval: Bayesian random-matrix analysis of neural-network weight spectra.

Importing hteval has no side effects (no logging or warnings configuration); only the command line configures
those.
"""

from hteval.errors import HtevalError, InputError, LayerSkipped
from hteval.spectra import LayerSpectrum, load_spectra, spectrum

__version__ = "0.1.0"

__all__ = [
    "HtevalError",
    "InputError",
    "LayerSkipped",
    "LayerSpectrum",
    "__version__",
    "load_spectra",
    "spectrum",
]
