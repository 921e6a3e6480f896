"""Run weightwatcher 0.7.7's default analyze() on the 2-D weights of a safetensors checkpoint.

Run by bench_analyze_vs_weightwatcher.py as `.venv-ww/bin/python benchmarks/_weightwatcher_run.py CHECKPOINT`
(weightwatcher needs torch, which lives only in .venv-ww). Prints the layers analysed, the ones it left out, the
alpha column's summary, and a last line `RESULT {json}` that the benchmark parses.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def build_module(tensors):
    """A torch module whose layers hold the checkpoint's 2-D float weights under their checkpoint names.

    weightwatcher's PyTorch iterator classifies layers by module class (Linear -> DENSE, Embedding -> EMBEDDING),
    which is what it would see on the real BertModel; a plain state dict would make every tensor DENSE.
    """
    import torch

    root = torch.nn.Module()
    for key, weight in tensors.items():
        if not key.endswith(".weight") or weight.ndim != 2 or not weight.is_floating_point():
            continue
        *parents, leaf = key[: -len(".weight")].split(".")
        module = root
        for part in parents:
            if part not in module._modules:
                module.add_module(part, torch.nn.Module())
            module = module._modules[part]
        rows, cols = weight.shape
        bias = tensors.get(key[: -len("weight")] + "bias")
        if "embeddings" in key:
            # _weight skips the random initialisation that would otherwise be timed
            layer = torch.nn.Embedding(rows, cols, _weight=weight)
        else:
            # the meta device likewise skips initialising weights that are replaced at once
            layer = torch.nn.Linear(cols, rows, bias=bias is not None, device="meta")
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
            if bias is not None:
                layer.bias = torch.nn.Parameter(bias, requires_grad=False)
        module.add_module(leaf, layer)
    return root


def main() -> None:
    path = sys.argv[1]
    start = time.perf_counter()
    import torch
    import weightwatcher
    from safetensors.torch import load_file

    # weightwatcher warns on every import that CUDA is absent; that is expected on this CPU-only machine
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    tensors = load_file(path)
    model = build_module(tensors)
    loaded = time.perf_counter()
    with torch.no_grad():
        details = weightwatcher.WeightWatcher(model=model).analyze()
    analysed = time.perf_counter()

    column = "longname" if "longname" in details.columns else "name"
    names = list(details[column])
    candidates = [k[: -len(".weight")] for k, w in tensors.items()
                  if k.endswith(".weight") and w.ndim == 2 and w.is_floating_point()]
    left_out = [f"{n} {'x'.join(map(str, tensors[n + '.weight'].shape))}" for n in candidates if n not in names]
    alpha = details["alpha"].astype(float)
    print(f"weightwatcher {weightwatcher.__version__}: {len(details)} layers analysed "
          f"of {len(candidates)} 2-D float weights; left out: {', '.join(left_out) or 'none'}")
    print("layer types: " + ", ".join(f"{n} {t}" for t, n in details["layer_type"].astype(str).value_counts().items()))
    print("alpha summary:")
    print(alpha.describe().to_string(float_format="{:.4g}".format))
    print(f"import + load {loaded - start:.1f} s, analyze() {analysed - loaded:.1f} s")
    print("RESULT " + json.dumps({"layers": len(details), "left_out": left_out,
                                  "analyze_s": analysed - loaded, "load_s": loaded - start}))


if __name__ == "__main__":
    main()
