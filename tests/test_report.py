"""report.md of hteval analyze (hteval.report.analysis) and the network order of layers (hteval.layer_order):
synthetic layers tables with and without the fit-check columns, with and without partial pooling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from hteval import names
from hteval.hierarchy import Pooled
from hteval.layer_order import natural_key, network_order
from hteval.network_analysis import read_layer_table, table_columns
from hteval.report import analysis
from hteval.report.analysis import format_p, write_report

MINILM = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
          "embeddings.token_type_embeddings.weight",
          *[f"encoder.layer.{i}.{part}.weight" for i in range(12)
            for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense", "intermediate.dense", "output.dense")],
          "pooler.dense.weight"]
LLAMA = ["model.embed_tokens.weight",
         *[f"model.layers.{i}.{part}.weight" for i in range(18)
           for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")],
         "lm_head.weight"]


def _shuffled(items, seed=0):
    return list(np.random.default_rng(seed).permutation(items))


def _block(name):
    found = re.search(r"\.(\d+)\.", name)
    return None if found is None else int(found.group(1))


# --- network order -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers, first, last", [(MINILM, "embeddings.", "pooler.dense.weight"),
                                                 (LLAMA, "model.embed_tokens", "lm_head.weight")])
def test_network_order_embeddings_first_blocks_by_number_head_last(layers, first, last):
    order = network_order(_shuffled(layers))
    assert sorted(order) == sorted(layers)
    assert order[0].startswith(first) and order[-1] == last
    numbers = [_block(name) for name in order if _block(name) is not None]
    assert numbers == sorted(numbers)  # 10 and 11 after 9, not after 1
    in_block = [_block(name) is not None for name in order]
    n_embeddings = len(order) - len(numbers) - 1
    assert in_block == [False] * n_embeddings + [True] * len(numbers) + [False]  # embeddings, blocks, head
    assert network_order(_shuffled(layers, seed=1)) == order == network_order(order)


def test_network_order_minilm_embeddings_and_pooler():
    order = network_order(_shuffled(MINILM))
    assert order[:3] == ["embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight",
                         "embeddings.word_embeddings.weight"]
    nine, ten = "encoder.layer.9.output.dense.weight", "encoder.layer.10.attention.self.key.weight"
    assert order.index(nine) < order.index(ten)


def test_network_order_digit_runs_are_numbers():
    assert network_order(["layers.10.attn", "layers.2.mlp", "layers.1.mlp"]) == ["layers.1.mlp", "layers.2.mlp",
                                                                                  "layers.10.attn"]
    assert natural_key("encoder.layer.10") > natural_key("encoder.layer.9")


def test_network_order_heads_and_embeddings_of_other_families():
    gpt2 = ["transformer.h.1.attn.c_attn.weight", "lm_head.weight", "transformer.wpe.weight",
            "transformer.h.0.mlp.c_fc.weight", "transformer.wte.weight"]
    assert network_order(gpt2) == ["transformer.wpe.weight", "transformer.wte.weight",
                                   "transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.c_attn.weight",
                                   "lm_head.weight"]
    t5 = ["decoder.block.0.layer.0.SelfAttention.q.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
          "shared.weight"]
    assert network_order(t5) == [t5[2], t5[1], t5[0]]  # encoder before decoder
    bert = ["classifier.weight", "bert.encoder.layer.0.output.dense.weight", "bert.embeddings.word_embeddings.weight"]
    assert network_order(bert) == [bert[2], bert[1], bert[0]]
    # an embedding inside a numbered block stays in its block; "output" inside a block is no head
    inner = ["layers.1.embed_proj.weight", "layers.0.output.weight", "layers.0.attn.weight"]
    assert network_order(inner) == ["layers.0.attn.weight", "layers.0.output.weight", "layers.1.embed_proj.weight"]


def test_network_order_any_strings_deterministic_duplicates_once():
    names_ = ["b", "", "a10", "a9", "b", "x.01", "x.1", "ünïcode.3", "a9"]
    order = network_order(names_)
    assert sorted(order) == sorted(set(names_)) and len(order) == len(set(names_))
    assert order.index("a9") < order.index("a10")
    for seed in range(5):
        assert network_order(_shuffled(names_, seed)) == order
    assert network_order([]) == []


# --- report.md -------------------------------------------------------------------------------------------------------

EMBED = "embeddings.word_embeddings.weight"
QUERY = "encoder.layer.2.attention.self.query.weight"
DENSE = "encoder.layer.10.output.dense.weight"
STUCK = "encoder.layer.9.intermediate.dense.weight"
POOLER = "pooler.dense.weight"
NEW_COLUMNS = [names.PPC_PVALUE, names.MISFIT, names.P_KAPPA_BELOW_10, names.BEST, names.WEIGHT]


def _row(name, kappa=(1.09, 0.95, 1.24), status=names.STATUS_OK, randomized=False, **extra):
    row = dict.fromkeys(table_columns(["htmp-exact"]), np.nan)
    row.update({names.NAME: name, names.MODEL: "htmp-exact", names.RANDOMIZED: randomized, names.STATUS: status,
                names.INTERVALS: names.INTERVALS_CALIBRATED, names.CONVERGED: status == names.STATUS_OK,
                names.N: 384, names.M: 384, names.GAMMA: 1.0,
                **dict(zip(("kappa_median", "kappa_ci_low", "kappa_ci_high"), kappa, strict=True))})
    return {**row, **dict.fromkeys(NEW_COLUMNS, np.nan), **extra}


@pytest.fixture
def table():
    rows = [_row(EMBED, ppc_pvalue=0.43, misfit=False, p_kappa_below_10=1.0, best="htmp-exact", weight=0.91),
            _row(QUERY, kappa=(0.8, 0.7, 0.93), ppc_pvalue=0.0004, misfit=True, p_kappa_below_10=1.0,
                 best="lognormal", weight=0.83),
            _row(QUERY, kappa=(812.0, 640.0, 1010.0), randomized=True, ppc_pvalue=0.61, misfit=False,
                 p_kappa_below_10=0.0),
            _row(DENSE, kappa=(9.5, 6.1, 15.2), p_kappa_below_10=0.55),  # no p-value: not checked
            _row(STUCK, kappa=(3.0, 0.5, 40.0), status=names.STATUS_NOT_CONVERGED, error="R-hat 1.05 > 1.01"),
            _row(POOLER, kappa=(2.2, 1.9, 2.6), ppc_pvalue=0.004, misfit=True, p_kappa_below_10=0.99,
                 best="htmp-exact", weight=0.7),
            {**dict.fromkeys(table_columns(["htmp-exact"]), np.nan), names.NAME: "embeddings.LayerNorm.bias",
             names.RANDOMIZED: False, names.STATUS: names.STATUS_SKIPPED}]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)  # not in network order


@pytest.fixture
def pooled():
    rng = np.random.default_rng(0)
    layers = [EMBED, DENSE, POOLER]
    mu = np.log(2.0) + 0.1 * rng.standard_normal(2000)
    tau = np.abs(0.5 + 0.08 * rng.standard_normal(2000))
    log_kappa = np.log([1.1, 9.0, 2.2]) + 0.05 * rng.standard_normal((2000, 3))
    return {"htmp-exact": Pooled(layers, mu, tau, log_kappa, 0.9, {"converged": True, "reasons": []})}


def _verdicts(report):
    section = report.split("## Verdicts")[1].split("## Layers")[0]
    return {line.split("`")[1]: line for line in section.splitlines() if line.startswith("* ")}


def test_report_verdicts_order_and_pooled_tau(table, tmp_path, pooled):
    path = write_report(table, tmp_path, network_order=[], pooled=pooled, prob=0.9, source="minilm.safetensors")
    report = path.read_text()
    summary = report.split("## kappa by layer")[0]
    assert "5 layers: 1 fits (posterior predictive p >= 0.01), 2 do not fit (p < 0.01), 1 converged without a fit " \
           "check, 1 not converged" in summary
    assert "1 layer: 1 fits (posterior predictive p >= 0.01)" in summary and "element-shuffled copies" in summary
    assert "1 tensor not fitted: 1 skipped" in summary
    tau, lo, hi = pooled["htmp-exact"].interval(pooled["htmp-exact"].tau)
    assert f"tau (sd of log kappa) {tau:.2f} [{lo:.2f}, {hi:.2f}]" in summary
    kappa, lo, hi = pooled["htmp-exact"].interval(pooled["htmp-exact"].kappa)
    assert ("**Model-level kappa** (HTMP, exact likelihood, partial pooling of 3 converged layers that the model "
            f"fits; misfitting layers left out): {kappa:.3g} [{lo:.3g}, {hi:.3g}]") in summary
    assert report.index("## Summary") < report.index("![kappa by layer](kappa_forest.png)") \
        < report.index("## Verdicts") < report.index("## Layers") < report.index("## Notes")
    assert (tmp_path / "kappa_forest.png").stat().st_size > 10_000

    lines = _verdicts(report)
    assert lines[EMBED] == (f"* `{EMBED}`: HTMP fits (p = 0.43); HTMP is the preferred model (weight 0.91); "
                            "kappa 1.09 [0.95, 1.24]; far from Marchenko-Pastur, P(kappa < 10) = 1.00")
    assert lines[POOLER] == (f"* `{POOLER}`: HTMP does not fit (p = 0.004); HTMP is the preferred model (weight "
                             "0.70); kappa not reported as a fit")
    assert lines[DENSE] == (f"* `{DENSE}`: HTMP fitted; fit not checked (no posterior predictive p-value); kappa 9.5 "
                            "[6.1, 15.2]; not clearly far from Marchenko-Pastur, P(kappa < 10) = 0.55")
    assert lines[STUCK] == (f"* `{STUCK}`: HTMP fit did not converge (R-hat 1.05 > 1.01); no verdict, its numbers "
                            "are not a result")
    # the misfit layer and its shuffled copy: one line each, under their own headings
    section = report.split("## Verdicts")[1]
    real, shuffled = section.split("element-shuffled copies")
    assert (f"* `{QUERY}`: HTMP does not fit (p < 0.001); log-normal preferred (weight 0.83); kappa not reported "
            "as a fit") in real
    assert (f"* `{QUERY}`: HTMP fits (p = 0.61); kappa 812 [640, 1010]; close to Marchenko-Pastur, "
            "P(kappa < 10) = 0.00") in shuffled
    # network order in the verdicts and the table, whatever the table's and network_order's order
    verdict_order = [line.split("`")[1] for line in real.splitlines() if line.startswith("* ")]
    assert verdict_order == [EMBED, QUERY, STUCK, DENSE, POOLER]
    table_md = report.split("## Layers")[1].split("## Notes")[0]
    assert [line.split(" | ")[0].removeprefix("| ") for line in table_md.splitlines()[4:]][:3] == [EMBED, QUERY,
                                                                                                   QUERY]
    assert "| ppc_pvalue | misfit | best | weight |" in table_md
    assert f"| {QUERY} | htmp-exact |  | 0.8 [0.7, 0.93] | 0.0004 | yes | lognormal | 0.83 |" in table_md


def test_report_without_pooling_and_network_order_given_reversed(table, tmp_path):
    order = network_order(table[names.NAME])
    report = write_report(table, tmp_path, network_order=order[::-1], pooled={}, prob=0.9).read_text()
    assert "Model-level" not in report and "tau" not in report
    assert list(_verdicts(report)) == [EMBED, QUERY, STUCK, DENSE, POOLER]
    assert (tmp_path / "kappa_forest.png").exists()


def test_old_table_without_fit_columns(table, tmp_path):
    old = table.drop(columns=NEW_COLUMNS)
    report = write_report(old, tmp_path, network_order=[], pooled={}, prob=0.9).read_text()
    assert "5 layers: 4 converged without a fit check, 1 not converged" in report
    assert _verdicts(report)[EMBED] == (f"* `{EMBED}`: HTMP fitted; fit not checked (no posterior predictive "
                                        "p-value); kappa 1.09 [0.95, 1.24]")
    assert "ppc_pvalue" not in report.split("## Layers")[1] and "| best" not in report
    assert (tmp_path / "kappa_forest.png").stat().st_size > 10_000


def test_misfit_from_csv_text_or_from_the_p_value_alone(table, tmp_path):
    """layers.csv gives `misfit` back as text beside empty cells; without the column, p < 0.01 decides."""
    table.to_csv(tmp_path / "layers.csv", index=False)
    again = read_layer_table(tmp_path / "layers.csv")
    report = write_report(again, tmp_path, network_order=[], pooled={}, prob=0.9).read_text()
    assert "2 do not fit" in report and "1 fits (" in report
    report = write_report(table.drop(columns=[names.MISFIT]), tmp_path, network_order=[], pooled={},
                          prob=0.9).read_text()
    assert "2 do not fit" in report and "HTMP does not fit (p < 0.001)" in report


def test_powerlaw_rows_state_tail_probabilities(tmp_path):
    row = {**dict.fromkeys(table_columns(["powerlaw"]), np.nan), names.NAME: "fc1.weight", names.MODEL: "powerlaw",
           names.RANDOMIZED: False, names.STATUS: names.STATUS_OK, "alpha_median": 3.1, "alpha_ci_low": 2.6,
           "alpha_ci_high": 3.7, names.PPC_PVALUE: 0.2, names.P_ALPHA_BELOW_2: 0.0, names.P_ALPHA_ABOVE_6: 0.01}
    report = write_report(pd.DataFrame([row]), tmp_path, network_order=[], pooled={}, prob=0.9).read_text()
    assert _verdicts(report)["fc1.weight"] == ("* `fc1.weight`: power-law tail fits (p = 0.20); alpha 3.1 [2.6, 3.7] "
                                               "(uncalibrated); P(alpha < 2) = 0.00; P(alpha > 6) = 0.01")
    assert (tmp_path / "alpha_forest.png").exists()


def test_forest_marks_misfits_hollow_and_unconverged_as_crosses(table, tmp_path, pooled, monkeypatch):
    figures = []

    def capture(*args, **kwargs):
        fig, ax = analysis_subplots(*args, **kwargs)
        figures.append((fig, ax))
        return fig, ax

    analysis_subplots = analysis.subplots
    monkeypatch.setattr(analysis, "subplots", capture)
    fitted = analysis._fitted(table, network_order(table[names.NAME]))
    analysis.plot_forest(fitted, "kappa", tmp_path / "kappa_forest.png", pooled=pooled, prob=0.9)
    fig, ax = figures[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "HTMP, exact likelihood: does not fit (p < 0.01), not a fit" in labels
    assert "HTMP, exact likelihood: not converged, not a result" in labels
    assert "model-level κ, 90% interval" in labels
    median = pooled["htmp-exact"].interval(pooled["htmp-exact"].kappa)[0]
    assert f"model-level κ, median {median:.3g}" in labels
    assert not any("$" in label for label in labels)  # no mathtext
    lines = {line.get_label(): line for line in ax.get_lines()}
    misfit = lines["HTMP, exact likelihood: does not fit (p < 0.01), not a fit"]
    assert misfit.get_markerfacecolor() == "white" and len(misfit.get_xdata()) == 2
    assert lines["HTMP, exact likelihood: not converged, not a result"].get_marker() == "x"
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == EMBED.removesuffix(".weight") and ticks[-1] == POOLER.removesuffix(".weight")
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first layer on top


@pytest.mark.parametrize("x, text", [(1012.0, "1010"), (0.8, "0.8"), (12345.0, "12300"), (2.5e-5, "2.5e-05"),
                                     (3.2e6, "3.2e+06")])
def test_significant(x, text):
    assert analysis.significant(x) == text


@pytest.mark.parametrize("p, text", [(0.43, "p = 0.43"), (0.004, "p = 0.004"), (0.0004, "p < 0.001"),
                                     (1.0, "p = 1.00"), (0.01, "p = 0.01")])
def test_format_p(p, text):
    assert format_p(p) == text


def test_model_choice_per_layer_names_the_preferred_model(tmp_path):
    """--models auto: each of a layer's rows carries the same best model and weight; each row's line says whether
    its own model is the preferred one, under one heading per model."""
    columns = table_columns(["htmp-exact", "lognormal"])
    common = {names.RANDOMIZED: False, names.STATUS: names.STATUS_OK, names.BEST: "lognormal", names.WEIGHT: 0.83}
    rows = [{**dict.fromkeys(columns, np.nan), **common, names.NAME: "h.1.w", names.MODEL: model, **extra}
            for model, extra in (("lognormal", {names.PPC_PVALUE: 0.3, names.MISFIT: False}),
                                 ("htmp-exact", {names.PPC_PVALUE: 0.0002, names.MISFIT: True, "kappa_median": 2.0,
                                                 "kappa_ci_low": 1.5, "kappa_ci_high": 2.6}))]
    report = write_report(pd.DataFrame(rows), tmp_path, network_order=["h.1.w"], pooled={}, prob=0.9).read_text()
    assert "### log-normal (lognormal)" in report and "### HTMP, exact likelihood (htmp-exact)" in report
    assert "* `h.1.w`: log-normal fits (p = 0.30); log-normal is the preferred model (weight 0.83)\n" in report
    assert ("* `h.1.w`: HTMP does not fit (p < 0.001); log-normal preferred (weight 0.83); kappa not reported as a "
            "fit\n") in report
    assert (tmp_path / "kappa_forest.png").exists()


def _layer_table(report: str) -> list[list[str]]:
    lines = report.split("## Layers")[1].split("## Notes")[0].strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]


def test_layer_table_leaves_out_columns_empty_in_every_row(table, tmp_path):
    """Exact draws have no R-hat and an unshuffled run no shuffled copies: their columns are left out, the others
    kept, and every row has as many cells as the header."""
    real = table[~table[names.RANDOMIZED]]
    header, *rows = _layer_table(write_report(real, tmp_path, network_order=[], pooled={}, prob=0.9).read_text())
    assert header == ["layer", "model", "kappa median [90%]", names.PPC_PVALUE, names.MISFIT, names.BEST,
                      names.WEIGHT, names.INTERVALS, "status"]
    assert len(rows) == 5 and all(len(row) == len(header) for row in rows)
    assert rows[0] == [EMBED, "htmp-exact", "1.09 [0.95, 1.24]", "0.43", "no", "htmp-exact", "0.91", "calibrated",
                       "ok"]
    converged = real.assign(**{names.R_HAT: 1.002})
    header, *_ = _layer_table(write_report(converged, tmp_path, network_order=[], pooled={}, prob=0.9).read_text())
    assert names.R_HAT in header and "shuffled" not in header
