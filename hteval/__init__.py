"""hteval: Bayesian random-matrix analysis of neural-network weight spectra.

Importing hteval has no side effects (no logging or warnings configuration); only the command line configures
those.
"""

from hteval.compare import Comparison, compare
from hteval.densities.htmp import HTMP, htmp_cdf, htmp_icdf, htmp_log_cdf, htmp_log_sf, htmp_logpdf
from hteval.densities.inverse_htmp import InverseHTMP, inverse_htmp_cdf, inverse_htmp_log_cdf, inverse_htmp_logpdf
from hteval.densities.mp import MarchenkoPastur, mp_cdf, mp_icdf, mp_logpdf
from hteval.errors import HtevalError, InputError, LayerSkipped
from hteval.infer import FitResult, fit
from hteval.sampling import sample_htmp_spectra, sample_htmp_spectrum, sample_mp_spectrum
from hteval.spectra import LayerSpectrum, load_spectra, spectrum

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "FitResult",
    "HTMP",
    "HtevalError",
    "InverseHTMP",
    "MarchenkoPastur",
    "InputError",
    "LayerSkipped",
    "LayerSpectrum",
    "__version__",
    "htmp_cdf",
    "htmp_log_cdf",
    "htmp_log_sf",
    "htmp_icdf",
    "htmp_logpdf",
    "compare",
    "fit",
    "inverse_htmp_cdf",
    "inverse_htmp_log_cdf",
    "inverse_htmp_logpdf",
    "load_spectra",
    "mp_cdf",
    "mp_icdf",
    "mp_logpdf",
    "sample_htmp_spectra",
    "sample_htmp_spectrum",
    "sample_mp_spectrum",
    "spectrum",
]
