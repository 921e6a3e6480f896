"""One vocabulary for the whole product: record fields = JSON keys = table columns = CLI flags.

Every module that writes or reads a layer record, a JSON key or a table column takes the name from here, so
the API, the JSON files, the CSV tables and the command line cannot drift apart.
"""

# Layer record (SPEC section 1), in the order they appear in tables and JSON.
NAME = "name"
SHAPE = "shape"
N = "N"
M = "M"
GAMMA = "gamma"
N_SLICES = "n_slices"
N_EIGS = "n_eigs"
N_CENSORED = "n_censored"
FLOOR = "floor"
NORMALISATION = "normalisation"
DTYPE = "dtype"
RECORD_FIELDS = (NAME, SHAPE, N, M, GAMMA, N_SLICES, N_EIGS, N_CENSORED, FLOOR, NORMALISATION, DTYPE)

# Summary statistics that replace the eigenvalues in JSON output.
EIG_MIN = "min"
EIG_MAX = "max"
EIG_MEAN = "mean"
EIG_SUMMARY_FIELDS = (EIG_MIN, EIG_MAX, EIG_MEAN)

# The arrays a record carries when asked for them (LayerSpectrum.to_record(with_eigenvalues=True)).
EIGENVALUES = "eigenvalues"
SLICE_IDS = "slice_ids"

# Status of a layer in whole-model runs: never a sentinel number.
STATUS = "status"
REASON = "reason"
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_ERROR = "error"
STATUS_NOT_CONVERGED = "not_converged"  # fitted, numbers kept, but R-hat / ESS / divergences failed
#: share of a layer's eigenvalues at or below the floor above which every output warns: that many are structural
#: zeros (rank deficiency, pruning), not small eigenvalues of the ensemble
CENSORED_SHARE_LIMIT = 0.1

# Whole-model table (hteval analyze's layers.csv), beside the record fields and <parameter>_<statistic> columns.
MODEL = "model"
RANDOMIZED = "randomized"  # the row fits the layer's element-shuffled copy (--randomize), the field's null model
R_HAT = "r_hat"  # the largest over the model's parameters
DIVERGENCES = "divergences"
ERROR = "error"  # why a layer has no numbers, or why its numbers did not converge
SECONDS = "seconds"
#: whether the row's intervals were found calibrated by simulation (hteval.calibration); the same key in JSON
INTERVALS = "intervals"
INTERVALS_CALIBRATED = "calibrated"
INTERVALS_UNCALIBRATED = "uncalibrated"
INTERVALS_NOTE = "intervals_note"

# The one normalisation hteval uses (SPEC section 1): X = W^T W / N with N >= M.
NORMALISATION_GRAM_OVER_N = "svd(W)^2/N"

# Parameters of the ensemble models.
KAPPA = "kappa"
SCALE = "scale"
TEMPERATURE = "T"

# Ensemble models: the names of the API, the CLI's --model/--models and the JSON "model" keys, with plot labels.
MODEL_LABELS = {"mp": "MP + outliers", "htmp": "HTMP", "htmp-exact": "HTMP, exact likelihood",
                "htmp-outliers": "HTMP + outliers",
                "inverse-htmp": "inverse HTMP", "powerlaw": "power-law tail", "correlated-mp": "correlated MP",
                "lognormal": "log-normal"}

#: the model `hteval fit` and `hteval analyze` use when none is named: the one whose intervals are calibrated
#: (README, "Which likelihood is the default")
DEFAULT_MODEL = "htmp-exact"

# Models compared when none are named (hteval compare's --models default). htmp-exact, the default model and the
# cheapest fit, is ranked by its exact evidence beside the iid models (it has no pointwise LOO). correlated-mp is
# opt-in for its cost: solving the population-covariance equation per eigenvalue makes its fit several times slower
# than all the others together (README, "Comparing ensemble models").
DEFAULT_COMPARE_MODELS = ("htmp-exact", "mp", "htmp", "htmp-outliers", "inverse-htmp", "powerlaw", "lognormal")
#: the HTMP family: what a comparison that prefers one of them says about a layer
HTMP_FAMILY = ("htmp-exact", "htmp", "htmp-outliers")

#: `hteval analyze --models auto`: the fast models (exact draws in well under a second to a few seconds a layer:
#: the HTMP family by its exact likelihood, MP, log-normal and the power-law tail), the best of each layer chosen
#: by exact evidence (layers.csv's best and weight). The iid HTMP variants cost 2-15 s a layer: `hteval compare`.
AUTO_MODELS = "auto"
AUTO_MODEL_LIST = ("htmp-exact", "mp", "lognormal", "powerlaw")

# Model comparison (comparison.json, comparison.csv).
#: the exact log marginal likelihood of the layer's eigenvalues (every model by quadrature; orderings counted the
#: same way for joint and iid likelihoods), and its difference from the best model's
LOG_EVIDENCE = "log_evidence"
D_LOG_EVIDENCE = "d_log_evidence"
#: the log evidence again with every prior twice as wide (prior sensitivity)
LOG_EVIDENCE_WIDE = "log_evidence_wide"
ELPD_LOO = "elpd_loo"
SE = "se"
D_ELPD = "d_elpd"
D_SE = "d_se"
#: a model's posterior probability among the models compared, from the exact evidence with equal prior odds
WEIGHT = "weight"
#: the iid models' PSIS-LOO stacking weight (a joint likelihood has no pointwise LOO)
STACKING_WEIGHT = "stacking_weight"
PARETO_K_BAD = "pareto_k_bad"
#: posterior predictive p-value of the fit (htmp-exact: exact replicate spectra; iid models: KS)
PPC_PVALUE = "ppc_pvalue"
#: the model does not fit the layer: ppc_pvalue below MISFIT_LEVEL
MISFIT = "misfit"
MISFIT_LEVEL = 0.01
#: posterior probabilities of the field's readings, reported beside the parameters (layers.csv, summary.json)
P_KAPPA_BELOW_10 = "p_kappa_below_10"  # HTMP far from Marchenko-Pastur
P_ALPHA_BELOW_2 = "p_alpha_below_2"  # power-law tail heavier than the field's "heavy" bound
P_ALPHA_ABOVE_6 = "p_alpha_above_6"  # tail lighter than the field's "light" bound
PROBABILITY_FIELDS = (P_KAPPA_BELOW_10, P_ALPHA_BELOW_2, P_ALPHA_ABOVE_6)
CONVERGED = "converged"
# Many checkpoints (hteval analyze over a directory, glob or list file): the gathered table's index columns.
CHECKPOINT = "checkpoint"  # the checkpoint's name in its set (hteval.io.checkpoint_set)
STEP = "step"  # its training step, the last number in its name
# Per-layer comparison table (hteval compare --layers: comparisons.csv), beside the record fields.
BEST = "best"  # the top model by exact log evidence among the converged fits; comparison.json's "best" too
RUNNER_UP = "runner_up"  # the second by log evidence (its d_log_evidence is the best's margin)
BEST_WIDE = "best_wide"  # the top by log evidence under priors twice as wide (log_evidence_wide)
BEST_LOO = "best_loo"  # the top by PSIS-LOO among the iid models (htmp-exact has no pointwise LOO)
#: best_loo beats the iid runner-up by PSIS-LOO by more than DECISIVE_Z standard errors of the difference (d_elpd
#: and d_se in comparisons.csv are that runner-up's)
DECISIVE = "decisive"
#: comparison.json: what "best" and the order of the models rank by (log_evidence; elpd_loo where no fit has an
#: exact evidence, e.g. NUTS draws)
RANKING = "ranking"
NOT_CONVERGED_MODELS = "not_converged"  # models left out of the ranking, comma-separated
COMPARISON_FIELDS = ("name", LOG_EVIDENCE, D_LOG_EVIDENCE, WEIGHT, LOG_EVIDENCE_WIDE, ELPD_LOO, SE, D_ELPD, D_SE,
                     STACKING_WEIGHT, PARETO_K_BAD, PPC_PVALUE, CONVERGED)
