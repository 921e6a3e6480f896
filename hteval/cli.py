"""The `hteval` command line: one function per sub-command, all sharing build_parser() and main().

Only this module configures logging and JAX's float64 and compilation cache (through the environment, so that a
command that never needs JAX never imports it). Each command imports what it needs when it runs: `hteval --help`
loads neither JAX nor numpy. Errors print one line, `hteval: error: ...`, and exit 2 for input errors (1 for
other hteval errors); --debug shows the traceback as well. A command over a whole file (esd, analyze, compare
--layers) goes on past a layer that fails, gives it a row with status error and its reason, and exits 3 with one
summary line (EXIT_STATUS). SIGINT and SIGTERM stop a command with one line too, and exit 130 or 143
(`hteval.interrupts`).
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from hteval import __version__, calibration, names
from hteval.errors import HtevalError, InputError
from hteval.interrupts import exit_now, handling_signals

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_STATUS = ("exit status: 0 when every layer was read (a fit that did not converge is a result: status "
               "not_converged); 3 when esd, analyze or compare --layers went on past layers that failed (each has "
               "status error and its reason in the output, and one line on stderr counts them); 2 for bad input (an "
               "unreadable file, a wrong option: one line 'hteval: error: ...'); 130 when stopped by SIGINT (Ctrl-C) "
               "and 143 by SIGTERM (one line says how far the run got; its finished rows are kept, and the same "
               "command resumes); 1 for other failures.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (argv None: this process's own, as the `hteval` program); returns the exit status. The
    program, stopped by a signal, ends with its status as soon as its command has stopped (`exit_now`)."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    _configure_jax()
    # SIGTERM stops a run as Ctrl-C does: one line, exit status 130 or 143 (`hteval.interrupts`)
    with handling_signals(lambda: "hteval: interrupted") as args.stop:
        try:
            return args.run(args)
        except HtevalError as err:
            if args.debug:
                traceback.print_exc()
            print(f"hteval: error: {' '.join(str(err).split())}", file=sys.stderr)
            return EXIT_INPUT if isinstance(err, InputError) else EXIT_FAILED
        except KeyboardInterrupt as interruption:  # the library has stopped its workers; its rows are whole
            if args.debug:
                traceback.print_exc()
            status = args.stop.report(interruption)
            if argv is None:  # the `hteval` program: what is left is the interpreter's teardown, skipped
                exit_now(status)
            return status


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command; each `_add_*` function adds one and sets `run` to its command."""
    parser = argparse.ArgumentParser(prog="hteval", description="Bayesian random-matrix analysis of the "
                                     "spectra of neural-network weights.", epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"hteval {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="debug logging, and tracebacks on errors (default: warnings only, one-line errors)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_esd(commands)
    _add_fit(commands)
    _add_compare(commands)
    _add_analyze(commands)
    return parser


def _add_fit(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fit", help="posterior of one ensemble model for one layer",
                                 description="Fit one ensemble model (" + ", ".join(names.MODEL_LABELS) + "; default "
                                 f"{names.DEFAULT_MODEL}) to one layer of a checkpoint, or to a file of eigenvalues: "
                                 "exact independent draws where the model has them, NUTS otherwise. Writes to --out "
                                 "summary.json (posterior summary, diagnostics, goodness of fit), posterior.nc (ArviZ "
                                 "DataTree), esd.png, rank.png, trace.png and prior_predictive.png.")
    _add_source_and_sampler_options(parser)
    parser.add_argument("--model", default=names.DEFAULT_MODEL, choices=list(names.MODEL_LABELS),
                        help="ensemble model (default: %(default)s, whose intervals are calibrated)")
    parser.set_defaults(run=cmd_fit)


def _add_source_and_sampler_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by fit and compare: one layer (checkpoint + name, or raw eigenvalues) and the sampler."""
    parser.add_argument("path", nargs="?", type=_checkpoint_argument, help="checkpoint file or directory")
    _add_bundled(parser)
    parser.add_argument("--layer", help="layer name, required when the checkpoint has several (`hteval esd PATH` "
                        "lists them) (default: the checkpoint's only layer; with --eigenvalues, the file's name)")
    parser.add_argument("--eigenvalues", type=Path,
                        help="file of eigenvalues of W^T W / N (text or 1-D .npy) instead of a checkpoint; values "
                        "in [-floor, floor] (zeros and rounding, as eigvalsh gives) are counted as censored; NaN, "
                        "inf and values below -floor are refused (default: none, read a checkpoint)")
    parser.add_argument("--gamma", type=float, help="aspect ratio M/N of raw eigenvalues, required with "
                        "--eigenvalues (default: none; a checkpoint's layer has its own)")
    parser.add_argument("--floor", type=float,
                        help="resolution bound of raw eigenvalues: those in [-floor, floor] are censored, those below "
                        "-floor refused (default: 1e-15 x M x the largest eigenvalue, float64's resolution)")
    _add_sampler_options(parser)


def _add_sampler_options(parser: argparse.ArgumentParser, chains: int = 4, draws: int = 1000,
                         warmup: int | None = None, max_draws: int | None = None) -> None:
    """Interval probability, seed, sampler, chains / draws / warm-up / extension, and the output directory."""
    parser.add_argument("--prob", type=float, default=0.9,
                        help="credible interval probability (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--sampler", choices=("auto", "exact", "nuts"), default="auto",
                        help="auto: exact independent draws by quadrature where the model has them (every "
                        "built-in model), NUTS otherwise; nuts: NUTS for every model; exact: refuse models without "
                        "exact draws (default: %(default)s)")
    parser.add_argument("--chains", type=int, default=chains,
                        help="chains (exact draws: draws are laid out as chains x draws) (default: %(default)s)")
    parser.add_argument("--draws", type=int, default=draws, help="draws per chain (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=draws if warmup is None else warmup,
                        help="NUTS warm-up iterations per chain (default: %(default)s)")
    parser.add_argument("--max-draws", type=int, default=max_draws,
                        help="a NUTS fit short of R-hat or ESS (without divergences) runs its chains on, doubling "
                        "the draws up to this many per chain (default: "
                        + ("none, no run-on)" if max_draws is None else "%(default)s)"))
    parser.add_argument("--out", type=Path, required=True, help="output directory")


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit, then write summary.json (written last, so its presence means the fit finished) and posterior.nc."""
    from hteval.infer import fit
    from hteval.predictive import add_posterior_predictive, add_prior_predictive
    from hteval.report.figures import plot_esd, plot_prior_predictive, plot_rank, plot_trace_pair

    source, layer = _source(args)
    result = fit(source, layer=layer, model=args.model, gamma=args.gamma, prob=args.prob, seed=args.seed,
                 chains=args.chains, draws=args.draws, warmup=args.warmup, floor=args.floor, progress_bar=True,
                 max_draws=args.max_draws, sampler=args.sampler)
    args.out.mkdir(parents=True, exist_ok=True)
    add_posterior_predictive(result, seed=args.seed)
    add_prior_predictive(result, seed=args.seed)
    result.data.to_netcdf(args.out / "posterior.nc", engine="h5netcdf")
    figures = [plot_esd(result, args.out / "esd.png", args.prob), plot_rank(result, args.out / "rank.png", args.prob),
               plot_trace_pair(result, args.out / "trace.png"),
               plot_prior_predictive(result, args.out / "prior_predictive.png", args.prob)]
    document = result.to_json()
    document["figures"] = [f.name for f in figures]
    (args.out / "summary.json").write_text(json.dumps(document, indent=2))
    if not result.converged:
        # the reasons went to stderr as a warning when the fit finished; summary.json keeps them
        print("NOT CONVERGED: the intervals below are unreliable")
    print(result.summary[["median", "ci_low", "ci_high", "r_hat", "ess_bulk"]].to_string())
    print(f"intervals: {calibration.note(result.model)}")
    print(_fit_verdict(result))
    print(f"wrote summary.json, posterior.nc, {', '.join(f.name for f in figures)} to {args.out}")
    return EXIT_OK


def _fit_verdict(result) -> str:
    """One line on whether the model fits the layer (its posterior predictive p-value)."""
    p = result.ppc_pvalue
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3g}"
    if result.misfit:
        return (f"DOES NOT FIT: posterior predictive {shown} < {names.MISFIT_LEVEL}; the model does not reproduce "
                "this spectrum, so its parameters are not a description of it")
    return f"goodness of fit: posterior predictive {shown} (misfit below {names.MISFIT_LEVEL})"


def _source(args: argparse.Namespace):
    """(source, layer) of fit and compare: a checkpoint and layer name, or a file of eigenvalues."""
    from hteval.io import read_eigenvalues

    if args.eigenvalues is not None and (args.path is not None or args.bundled):
        raise InputError("give a checkpoint (PATH or --bundled) or --eigenvalues FILE, not both")
    if args.eigenvalues is not None:
        return read_eigenvalues(args.eigenvalues), args.layer or args.eigenvalues.stem
    if args.path is not None or args.bundled:
        return _checkpoint_path(args), args.layer
    raise InputError("give a checkpoint PATH, --bundled or --eigenvalues FILE")


def _add_compare(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("compare", help="compare ensemble models on one layer (exact evidence, PSIS-LOO)",
                                 description="Fit several ensemble models to one layer and rank them by their exact "
                                 "marginal likelihoods (posterior probabilities, and the evidence under priors twice "
                                 "as wide), beside PSIS-LOO with stacking weights among the iid models, Pareto-k "
                                 "diagnostics and posterior predictive p-values; write comparison.json, "
                                 "comparison.csv, figures and one posterior_MODEL.nc per model (parameter draws; "
                                 "--full-posteriors for the whole posterior) to --out.")
    _add_source_and_sampler_options(parser)
    parser.add_argument("--models", default=",".join(names.DEFAULT_COMPARE_MODELS),
                        help="comma-separated models (default: %(default)s; correlated-mp, the costliest (about "
                        "15 s on 384 eigenvalues against 1-5 s for the others), is opt-in)")
    parser.add_argument("--layers", metavar="PATTERN",
                        help="compare every layer matching this glob pattern ('*': all) instead of one --layer: "
                        "one row per layer in DIR/comparisons.csv as each finishes (resumable), each layer's "
                        "comparison in DIR/layers/LAYER.comparison.json (default: none, one layer)")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --layers: processes comparing side by side (default: the CPU count, at most 4); "
                        "with --engine dask and no --scheduler, also the local cluster's worker processes")
    _add_engine_options(parser, "with --layers, where the singular values are computed: on this machine (local), "
                        "or on a Dask cluster, one task per tensor")
    parser.add_argument("--full-posteriors", action="store_true",
                        help="write each model's whole posterior to posterior_MODEL.nc: with the pointwise "
                        "log-likelihood that PSIS-LOO reads (chains x draws x eigenvalues, about 12 MB a model on "
                        "384 eigenvalues) and the posterior predictive spectra (default: off, the parameter draws, "
                        "sampler statistics and observed spectrum only, well under 1 MB a model)")
    _add_restart(parser, "with --layers: ")
    parser.set_defaults(run=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """Fit every model, write each posterior as it finishes, then comparison.json / .csv and the figures. --out is
    created with the first posterior, so that a run stopped by its input (a layer not found) leaves no folder."""
    from hteval.model_comparison import compare_fits, fit_models
    from hteval.report.figures import plot_comparison

    models = _model_list(args.models, at_least=2)
    if args.layers is not None:
        return _compare_every_layer(args, models)
    if args.engine != "local" or args.scheduler:
        raise InputError("--engine dask and --scheduler spread the layers of --layers; one --layer is compared here")
    if args.restart:
        raise InputError("--restart replaces the resumable run of --layers; one --layer is compared afresh anyway")
    source, layer = _source(args)

    def save(model, result):
        write_posterior(result, args.out / f"posterior_{model}.nc", full=args.full_posteriors)

    fits = fit_models(source, layer=layer, models=models, gamma=args.gamma, prob=args.prob, seed=args.seed,
                      chains=args.chains, draws=args.draws, warmup=args.warmup, floor=args.floor,
                      progress_bar=True, on_fit=save, max_draws=args.max_draws, sampler=args.sampler)
    comparison = compare_fits(fits, seed=args.seed)
    comparison.table.to_csv(args.out / "comparison.csv")
    figures = plot_comparison(comparison, args.out, args.prob)
    document = comparison.to_json()
    document["figures"] = [f.name for f in figures]
    (args.out / "comparison.json").write_text(json.dumps(document, indent=2))
    print(comparison.table.to_string(float_format="{:.4g}".format))
    print(f"best: {comparison.best} (by {comparison.ranking}); under priors twice as wide: {comparison.best_wide}; "
          f"by PSIS-LOO among the iid models: {comparison.best_loo}")
    for model in comparison.table.index:
        print(f"intervals of {model}: {calibration.note(model)}")
    # comparison.warnings were logged (stderr) as they arose, and comparison.json keeps them
    kept = "with" if args.full_posteriors else "draws only; --full-posteriors adds"
    print(f"wrote comparison.json, comparison.csv, {', '.join(f.name for f in figures)} and one posterior_MODEL.nc "
          f"per model ({kept} the pointwise log-likelihoods) to {args.out}")
    return EXIT_OK


#: DataTree groups of a posterior file without --full-posteriors: none grows with the number of eigenvalues
#: times draws (the pointwise log-likelihood) or with predictive spectra
THIN_GROUPS = ("posterior", "sample_stats", "observed_data")


def write_posterior(result, path: Path, *, full: bool) -> None:
    """A fit's posterior as netCDF: the whole DataTree, or (full=False) its THIN_GROUPS only; the folder is
    created here."""
    data = result.data
    if not full:
        data = data.filter(lambda node: node.name in THIN_GROUPS)
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_netcdf(path, engine="h5netcdf")


def _compare_every_layer(args: argparse.Namespace, models: list[str]) -> int:
    from hteval.layer_comparison import COMPARISON_TABLE, compare_layers

    if (args.path is None and not args.bundled) or args.eigenvalues is not None or args.layer is not None:
        raise InputError("--layers compares the layers of a checkpoint (PATH or --bundled); give no --layer or "
                         "--eigenvalues")
    args.path = _checkpoint_path(args)
    bar = work_bar(unit="layer", desc="layers")
    _say_when_stopped(args, bar, "layer", args.out / COMPARISON_TABLE)

    def progress(row, done, total):
        bar.set_postfix_str(f"{row[names.NAME]} {row.get(names.BEST) or row[names.STATUS]}", refresh=False)
        bar.count(row, done, total)

    with _shown(bar):
        table = compare_layers(args.path, args.out, models, args.layers, prob=args.prob, seed=args.seed,
                               chains=args.chains, draws=args.draws, warmup=args.warmup,
                               max_draws=args.max_draws, workers=args.workers, on_row=progress,
                               sampler=args.sampler, engine=args.engine, scheduler=args.scheduler,
                               restart=args.restart)
    ranked = table[table[names.STATUS] == names.STATUS_OK] if len(table) else table
    if len(ranked):
        print(ranked[[names.NAME, names.BEST, names.WEIGHT, names.RUNNER_UP, names.D_LOG_EVIDENCE, names.BEST_WIDE,
                      names.BEST_LOO]].to_string(index=False, float_format="{:.4g}".format))
        print("best model counts: " + ", ".join(f"{m} {n}" for m, n in ranked[names.BEST].value_counts().items()))
    counts = table[names.STATUS].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} rows ({', '.join(f'{v} {k}' for k, v in counts.items())}) in {args.out / COMPARISON_TABLE}")
    _warn_censored(table, f"the record of each layer in {args.out / COMPARISON_TABLE}")
    return _table_status(table, args.out / COMPARISON_TABLE)


def _model_list(text: str, at_least: int) -> list[str]:
    """--models: comma-separated model names, each known, at least `at_least` of them; "auto" (analyze): the
    models compare uses by default, the layer's best chosen among them."""
    if text.strip() == names.AUTO_MODELS:
        from hteval.network_analysis import auto_models

        return auto_models()
    models = [m.strip() for m in text.split(",") if m.strip()]
    if any(m not in names.MODEL_LABELS for m in models) or len(models) < at_least:
        need = "two or more" if at_least == 2 else "one or more"
        raise InputError(f"--models needs {need} of {', '.join(names.MODEL_LABELS)}; got {text!r}")
    return models


def _add_restart(parser: argparse.ArgumentParser, when: str = "") -> None:
    """--restart: replace the run that --out holds (`hteval.run_restart`)."""
    parser.add_argument("--restart", action="store_true",
                        help=f"{when}replace the run that --out holds (of another checkpoint, with other settings, "
                        "or by an earlier hteval) with this one: it is written beside DIR and swapped in whole when "
                        "it finishes, so DIR holds the old results or the new ones, never a mix; a restart cut "
                        "short resumes with the same command (default: off: resume DIR's run, and refuse a DIR that "
                        "holds another run)")


def _add_engine_options(parser: argparse.ArgumentParser, where: str) -> None:
    """--engine and --scheduler: where the singular values are computed (`hteval.dask_layers`)."""
    parser.add_argument("--engine", choices=("local", "dask"), default="local",
                        help=f"{where} that reads its tensor from PATH on its worker, while the fits and every "
                        "file stay here (dask; needs the distributed extra; docs/cluster.md) (default: "
                        "%(default)s)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="with --engine dask: a running Dask scheduler, e.g. tcp://10.0.0.5:8786, whose "
                        "workers see PATH at the same path (default: none, a cluster of --workers processes on "
                        "this machine, bound to 127.0.0.1)")


def _add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """PATH or --bundled, resolved by _checkpoint_path (esd and analyze)."""
    parser.add_argument("path", nargs="?", type=_checkpoint_argument, metavar="PATH",
                        help="checkpoint: .safetensors, shard directory, .npy, .npz, .pt/.bin, or the URL of a "
                        "safetensors checkpoint (s3://, gs://, https://: read with fsspec, docs/cluster.md)")
    _add_bundled(parser)


def _add_bundled(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundled", action="store_true",
                        help="use the installed all-MiniLM-L6-v2 checkpoint instead of PATH (default: off)")


def _add_analyze(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("analyze", help="fit every layer of a checkpoint, or of many (resumable)",
                                 description="Fit one or more ensemble models to every eligible layer of a "
                                 "checkpoint; write DIR/layers.csv one row per layer and model as each fit "
                                 "finishes, DIR/layers/LAYER.MODEL.{json,draws.npz,esd.png}, and at the end "
                                 "DIR/report.md with forest plots of kappa (and alpha) across layers. Run again "
                                 "with the same --out to resume: finished rows are kept and not refitted (a --out "
                                 "that holds another run, of another checkpoint or other settings, is refused; "
                                 "--restart replaces it). "
                                 "Given many checkpoints (several PATHs, a directory of them, a quoted glob or a "
                                 ".txt list file), each is analyzed into DIR/checkpoints/NAME/, their rows are "
                                 "gathered into DIR/checkpoints.csv (indexed by checkpoint, step and layer) and "
                                 "DIR/dynamics.{csv,md} and DIR/dynamics_*.png show kappa against the training "
                                 "step.")
    parser.add_argument("path", nargs="*", type=_checkpoint_argument, metavar="PATH",
                        help="checkpoint (.safetensors, shard directory, .npy, .npz, .pt/.bin, or the URL of a "
                        "safetensors checkpoint: s3://, gs://, https://, read with fsspec), or many: several "
                        "PATHs, a directory of checkpoints, a quoted glob ('run/step_*.safetensors') or a .txt "
                        "file listing one per line")
    _add_bundled(parser)
    parser.add_argument("--models", default=names.DEFAULT_MODEL,
                        help="comma-separated models (default: %(default)s, whose intervals are calibrated), or "
                        f"'auto': {', '.join(names.AUTO_MODEL_LIST)}, all drawn exactly, with each layer's most "
                        "probable model by exact evidence in layers.csv (best, weight); a few seconds a layer "
                        "more. With two or more models every layer gets best and weight")
    _add_layers_pattern(parser)
    parser.add_argument("--randomize", action="store_true",
                        help="also fit each layer's element-shuffled copy (seeded): the null model, rows with "
                        "randomized = True (default: off)")
    parser.add_argument("--hierarchical", action="store_true",
                        help="pool kappa across the converged layers (partial pooling): a model-level kappa "
                        "with its interval in DIR/hierarchical.json, per-layer pooled intervals in DIR/pooled.csv "
                        "(default: off)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes fitting side by side, each taking whole groups of same-shape layers "
                        "(default: the CPU count, at most 4; 1: all in this process); with --engine dask and no "
                        "--scheduler, also the local cluster's worker processes")
    _add_engine_options(parser, "where the singular values are computed: on this machine (local; many checkpoints: "
                        "whole checkpoints dealt to --workers processes), or on a Dask cluster, one task per "
                        "tensor (per checkpoint and tensor with many)")
    parser.add_argument("--batched", action=argparse.BooleanOptionalAction, default=None,
                        help="fit each group of same-shape layers in one vmapped NUTS run, all chains of all "
                        "its layers as lanes (the accelerator path; no --max-draws run-on). Default: on when "
                        "JAX runs on a GPU, off on a CPU, where it is slower")
    parser.add_argument("--svd", choices=("auto", "host", "device"), default="auto",
                        help="singular values with LAPACK on the CPU (host) or with JAX on its device (default: "
                        "%(default)s, the device when JAX runs on a GPU)")
    parser.add_argument("--no-figures", dest="figures", action="store_false",
                        help="skip the per-layer ESD figures (default: drawn; the report's forest plots are "
                        "always drawn)")
    # NUTS's warm-up lighter than fit's; the convergence criteria are the same
    _add_sampler_options(parser, chains=4, draws=1000, warmup=500, max_draws=2400)
    _add_restart(parser)
    parser.set_defaults(run=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Fit every layer, one progress bar over this run's (layer, model) fits (over checkpoints when there are
    many); print where the table is."""
    from hteval.io.checkpoint_set import is_checkpoint_set
    from hteval.network_analysis import LAYER_TABLE, analyze
    from hteval.report.analysis import REPORT

    source = _checkpoint_path(args)
    models = _model_list(args.models, at_least=1)
    options = dict(prob=args.prob, seed=args.seed, chains=args.chains, draws=args.draws, warmup=args.warmup,
                   max_draws=args.max_draws, randomize=args.randomize, hierarchical=args.hierarchical,
                   figures=args.figures, batched=args.batched, svd=args.svd, sampler=args.sampler,
                   restart=args.restart)
    if is_checkpoint_set(source):
        return _analyze_checkpoints(args, source, models, options)
    bar = work_bar(unit="fit", desc="fits")
    _say_when_stopped(args, bar, "fit", args.out / LAYER_TABLE)

    def progress(row, done, total):
        bar.set_postfix_str(f"{row[names.NAME]} {row.get(names.MODEL) or ''} {row[names.STATUS]}", refresh=False)
        bar.count(row, done, total)

    def starting(name, model):
        bar.set_postfix_str(f"fitting {name} {model}")

    with _shown(bar):
        table = analyze(source, args.out, models, args.layers, workers=args.workers, on_row=progress,
                        on_start=starting, label=_checkpoint_label(args), engine=args.engine,
                        scheduler=args.scheduler, **options)
    counts = table[names.STATUS].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} rows ({', '.join(f'{v} {k}' for k, v in counts.items())}) in {args.out / LAYER_TABLE}")
    print(f"report: {args.out / REPORT}")
    _warn_censored(table, f"the notes of {args.out / REPORT}")
    return _table_status(table, args.out / LAYER_TABLE)


def _say_when_stopped(args: argparse.Namespace, bar, noun: str, table: Path, parts: str | None = None) -> None:
    """The one line of a run stopped by a signal (`hteval.interrupts`): how far its progress bar got, and where
    its finished rows are kept for the same command to resume: `table` (in --out, or with --restart in the new
    run's folder beside it, `hteval.run_restart`), or else the tables that match the glob `parts` beside it (the
    checkpoints' own layers.csv, before the first checkpoint is gathered)."""

    def line() -> str:
        done, total = bar.n, bar.total
        counted = f"after {done} of {total} {noun}{'s' * (total != 1)}" if total else f"before the first {noun}"
        kept = _kept_rows(table, parts, restart=getattr(args, "restart", False))
        if kept is not None:
            return f"hteval: interrupted {counted}; rows kept in {kept}; run the same command to resume"
        return f"hteval: interrupted {counted}; no rows written yet; run the same command to start again"

    if hasattr(args, "stop"):
        args.stop.describe = line


def _kept_rows(table: Path, parts: str | None, *, restart: bool) -> Path | None:
    """The table, or the glob of tables, that holds this run's rows; None while it has none."""
    out = table.parent
    folders = sorted(out.parent.glob(f"{out.name}.hteval-restart-*")) if restart else [out]
    for folder in folders:
        if _complete_rows(folder / table.name):
            return folder / table.name
        if parts is not None and any(_complete_rows(p) for p in folder.glob(parts)):
            return folder / parts
    return None


def _complete_rows(table: Path) -> int:
    """Complete rows (lines after the header) of a row file; 0 when there is none."""
    try:
        return max(table.read_bytes().count(b"\n") - 1, 0)
    except OSError:
        return 0


@contextlib.contextmanager
def _shown(bar):
    """The bar of the block's run, closed after it. A run that ends in an error or a stop before its first fit
    leaves no bar behind: its one line (a refusal, an input error, "interrupted before the first fit") then stands
    alone."""
    try:
        yield bar
    except BaseException:
        if not bar.n:
            bar.leave = False
        raise
    finally:
        bar.close()


def work_bar(*, unit: str, desc: str, **options):
    """The progress bar of a whole-checkpoint run (`hteval analyze`, `hteval compare --layers`).

    It counts this run's fits (or comparisons): skipped tensors are no work, and rows a resumed run already has
    are not this run's. Its rate, and so the time left, is counted from the end of the first fit, which pays for
    JAX's start and compilation (up to tens of seconds; later fits reuse the compiled program), so there is no
    estimate before the second; the elapsed time still starts with the run. Update it with
    count(row, done, total), the arguments of on_row; options go to tqdm.
    """
    from tqdm.auto import tqdm

    class WorkBar(tqdm):
        first: tuple[int, float] | None = None  # (work done, time) when the first fit finished
        work = 0

        def count(self, row, done: int, total: int) -> None:
            # Only fits carry their seconds. A skipped tensor's row is written the moment it is counted in
            # `total`, and rows a resumed run has are counted in both, so total - done is fits still to do.
            self.work += names.SECONDS in row
            if self.first is None and self.work:
                self.first = (self.work, self._time())
            self.total, self.n = self.work + total - done, self.work
            self.refresh()

        @property
        def format_dict(self):
            meter = super().format_dict
            if self.first is not None:  # 0 (before a second fit) shows as '?'
                elapsed = self._time() - self.first[1]
                meter["rate"] = (self.n - self.first[0]) / elapsed if elapsed > 0 else 0.0
            return meter

    return WorkBar(unit=unit, desc=desc, **options)


def _analyze_checkpoints(args: argparse.Namespace, source, models: list[str], options: dict) -> int:
    from tqdm.auto import tqdm

    from hteval.checkpoints import CHECKPOINT_DIR, CHECKPOINT_TABLE, analyze_checkpoints
    from hteval.network_analysis import LAYER_TABLE
    from hteval.report.dynamics import DYNAMICS_REPORT

    bar = tqdm(unit="checkpoint", desc="checkpoints")
    _say_when_stopped(args, bar, "checkpoint", args.out / CHECKPOINT_TABLE, f"{CHECKPOINT_DIR}/*/{LAYER_TABLE}")

    def progress(checkpoint, done, total):
        bar.total, bar.n = total, done
        bar.set_postfix_str(checkpoint.name)
        bar.refresh()

    with _shown(bar):
        table = analyze_checkpoints(source, args.out, models, args.layers, engine=args.engine,
                                    scheduler=args.scheduler, workers=args.workers, on_checkpoint=progress,
                                    **options)
    counts = table[names.STATUS].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} rows over {table[names.CHECKPOINT].nunique() if len(table) else 0} checkpoints "
          f"({', '.join(f'{v} {k}' for k, v in counts.items())}) in {args.out / CHECKPOINT_TABLE}")
    print(f"training dynamics: {args.out / DYNAMICS_REPORT}")
    _warn_censored(table, f"the notes of each report.md under {args.out / 'checkpoints'}")
    return _table_status(table, args.out / CHECKPOINT_TABLE, keys=(names.CHECKPOINT, names.NAME))


def _table_status(table, path: Path, keys: Sequence[str] = (names.NAME,)) -> int:
    """EXIT_PARTIAL, with one summary line on stderr, when some layers of a whole-file run failed (a row with status
    error: unreadable, or its fit raised); EXIT_OK otherwise. A layer counts once however many models it has."""
    if table.empty:
        return EXIT_OK
    layers = table[(table[names.STATUS] != names.STATUS_SKIPPED) & table[names.NAME].notna()]
    failed = layers[layers[names.STATUS] == names.STATUS_ERROR]
    counts = [(len(failed.drop_duplicates(list(keys))), len(layers.drop_duplicates(list(keys))), "layer")]
    if names.CHECKPOINT in table:  # a checkpoint of many that cannot be read is one row without a layer name
        counts.append((int(table[names.NAME].isna().sum()), table[names.CHECKPOINT].nunique(), "checkpoint"))
    return _run_status(counts, f"status=error rows in {path}")


def _run_status(counts: Sequence[tuple[int, int, str]], where: str) -> int:
    """counts: (failed, total, noun) per kind of entry."""
    failures = [f"{failed} of {total} {noun}{'s' * (total != 1)}" for failed, total, noun in counts if failed]
    if not failures:
        return EXIT_OK
    print(f"hteval: {' and '.join(failures)} failed: see {where}", file=sys.stderr)
    return EXIT_PARTIAL


def _warn_censored(table, where: str) -> None:
    """One logged warning for the layers whose censored share exceeds names.CENSORED_SHARE_LIMIT."""
    from hteval.spectra import censored_layers

    layers = censored_layers(table.to_dict("records")) if len(table) else {}
    if layers:
        logger.warning("more than %.0f%% of the eigenvalues at or below the floor in %d layer(s): %s; rank deficiency "
                       "or pruning? A structural zero is not a small eigenvalue: see %s",
                       100 * names.CENSORED_SHARE_LIMIT, len(layers), ", ".join(layers), where)


def _add_esd(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("esd", help="eigenvalue spectrum of each layer of a checkpoint",
                                 description="Print one record per layer of a checkpoint (shape, N, M, "
                                 "gamma, floor, censored count, eigenvalue min/max/mean); skipped tensors and "
                                 "layers that could not be read (status error, with the reason) follow, then a "
                                 "warning for each layer with more than "
                                 f"{names.CENSORED_SHARE_LIMIT:.0%} of its eigenvalues censored. Exit status 3 "
                                 "when some layers failed.")
    _add_checkpoint_argument(parser)
    _add_layer_options(parser)
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of records instead of a table (default: a table)")
    parser.set_defaults(run=cmd_esd)


def _add_layer_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that reads a checkpoint; names match load_spectra's keyword arguments."""
    _add_layers_pattern(parser)
    parser.add_argument("--min-eigs", type=int, default=16, metavar="N",
                        help="skip layers with fewer eigenvalues (default: %(default)s)")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="skip",
                        help="skip: list a bad layer (NaN or inf weights, a complex or empty tensor) with status "
                        "error and its reason, go on, and exit with status 3; raise: stop at the first bad layer "
                        "with its error and exit status 2 (default: %(default)s)")


def _add_layers_pattern(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", metavar="PATTERN",
                        help="glob pattern of tensor names, e.g. 'encoder.*' (default: every tensor)")


def cmd_esd(args: argparse.Namespace) -> int:
    """`hteval esd`: print the layer records of a checkpoint, as a table or as JSON."""
    from hteval.spectra import LayerSpectrum, SkippedLayer, iter_spectra

    path = _checkpoint_path(args)
    results = list(iter_spectra(path, layers=args.layers, min_eigs=args.min_eigs, on_error=args.on_error))
    print(_as_json(results) if args.json else _as_table(results))
    failed = sum(isinstance(r, SkippedLayer) and r.status == names.STATUS_ERROR for r in results)
    read = sum(isinstance(r, LayerSpectrum) for r in results)
    return _run_status([(failed, failed + read, "layer")], "the status=error records above" if args.json else
                       "the failed layers listed above")


def _checkpoint_argument(text: str) -> str | Path:
    """A PATH as typed: a Path, or a URL kept as its string (as a Path, s3://bucket/key would become s3:/bucket/key)."""
    from hteval.io.remote_path import is_url

    return text if is_url(text) else Path(text)


def _checkpoint_label(args: argparse.Namespace) -> str:
    """The checkpoint as the user named it (reports): the bundled network by name, a PATH as typed."""
    if args.bundled:
        return "all-MiniLM-L6-v2 (--bundled)"
    return " ".join(str(p) for p in args.path) if isinstance(args.path, list) else str(args.path)


def _checkpoint_path(args: argparse.Namespace) -> str | Path | list[str | Path]:
    """PATH or --bundled; analyze's PATH takes several, returned as a list when there are."""
    paths = args.path if isinstance(args.path, list) else [] if args.path is None else [args.path]
    if args.bundled and paths:
        raise InputError("give PATH or --bundled, not both")
    if args.bundled:
        from hteval.io import bundled_checkpoint

        return bundled_checkpoint()
    if not paths:
        raise InputError("a checkpoint PATH (or --bundled) is required")
    return paths[0] if len(paths) == 1 else paths


def _record(result) -> dict:
    from hteval.spectra import SkippedLayer

    if isinstance(result, SkippedLayer):
        return result.to_record()
    return {**result.to_record(), names.STATUS: names.STATUS_OK, names.REASON: None, "warnings": result.warnings}


def _as_json(results: list) -> str:
    # One record per line: a valid JSON list that still reads (and greps) line by line.
    return "[\n" + ",\n".join(json.dumps(_record(result)) for result in results) + "\n]"


def _as_table(results: list) -> str:
    import pandas as pd  # only the table needs pandas; keep it out of the JSON path

    from hteval.spectra import LayerSpectrum, SkippedLayer

    rows = [r.to_record() for r in results if isinstance(r, LayerSpectrum)]
    columns = [*names.RECORD_FIELDS, *names.EIG_SUMMARY_FIELDS]
    table = pd.DataFrame(rows, columns=columns)
    table[names.SHAPE] = table[names.SHAPE].map(lambda shape: "x".join(map(str, shape)))
    text = table.to_string(index=False, float_format="{:.4g}".format) if rows else "(no layers)"
    warnings = [w for r in results if isinstance(r, LayerSpectrum) for w in r.warnings]
    notes = "\n\n" + "\n".join(f"warning: {w}" for w in warnings) if warnings else ""
    return text + _skipped_lines([r for r in results if isinstance(r, SkippedLayer)]) + notes


def _skipped_lines(skipped: list) -> str:
    """The skipped tensors, then the layers that failed (status error), each with its reason."""
    text = ""
    for status, what in ((names.STATUS_SKIPPED, "tensor{} skipped"), (names.STATUS_ERROR, "layer{} failed")):
        group = [s for s in skipped if s.status == status]
        if group:
            lines = [f"  {s.name} [{'x'.join(map(str, s.shape))}] {s.status}: {s.reason}" for s in group]
            text += f"\n\n{len(group)} {what.format('s' * (len(group) != 1))}:\n" + "\n".join(lines)
    return text


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _configure_jax() -> None:
    """float64 and the compilation cache for JAX, set in the environment that JAX reads when it is imported (by
    a command that needs it, and by worker processes, which inherit it): no command pays for importing JAX here.
    A value the user set already is kept."""
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    # Compiled samplers persist between runs (a new process fitting a layer of a shape seen before skips the
    # ~10-20 s of XLA compilation); HTEVAL_CACHE=off disables it, HTEVAL_CACHE=DIR moves it.
    cache = os.environ.get("HTEVAL_CACHE", str(Path.home() / ".cache" / "hteval" / "jax"))
    if cache != "off":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1.0")


if __name__ == "__main__":
    sys.exit(main())
