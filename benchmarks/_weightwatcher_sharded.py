"""Run weightwatcher 0.7.7's default analyze() on the 2-D weights of a sharded safetensors checkpoint directory.

Run by llm_checkpoint.py as `.venv-ww/bin/python benchmarks/_weightwatcher_sharded.py DIR` (weightwatcher needs
torch, which lives only in .venv-ww). Every shard named in DIR's *.safetensors.index.json is loaded with
safetensors.torch as stored (bfloat16): weightwatcher converts each layer to float32 itself when it reads it
(RMT_Util.torch_T_to_np: `.float().numpy()`), so the model is held once, in bf16, plus one layer in float32 at a
time. Layers are built as _weightwatcher_run.py builds them (Linear, or Embedding for Llama's embed_tokens), so
weightwatcher classifies them as it would on the real model. Prints the same summary and `RESULT {json}` line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


def load_shards(directory: Path) -> dict:
    """Every tensor of every shard listed in the directory's index, in the order of its weight_map."""
    from safetensors.torch import load_file

    (index,) = directory.glob("*.safetensors.index.json")
    weight_map = json.loads(index.read_text())["weight_map"]
    tensors = {}
    for shard in dict.fromkeys(weight_map.values()):
        tensors.update(load_file(directory / shard))
    return {name: tensors[name] for name in weight_map}


def build_module(tensors: dict):
    """A torch module whose layers hold the checkpoint's 2-D float weights under their checkpoint names."""
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
        if leaf.startswith("embed"):
            # _weight skips the random initialisation that would otherwise be timed
            layer = torch.nn.Embedding(rows, cols, _weight=weight)
        else:
            # the meta device likewise skips initialising weights that are replaced at once
            layer = torch.nn.Linear(cols, rows, bias=False, device="meta")
            layer.weight = torch.nn.Parameter(weight, requires_grad=False)
        module.add_module(leaf, layer)
    return root


def main() -> None:
    directory = Path(sys.argv[1])
    start = time.perf_counter()
    import torch
    import weightwatcher

    # weightwatcher warns on every import that CUDA is absent; that is expected on this CPU-only machine
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    tensors = load_shards(directory)
    model = build_module(tensors)
    loaded = time.perf_counter()
    with torch.no_grad():
        details = weightwatcher.WeightWatcher(model=model).analyze()
    analysed = time.perf_counter()

    column = "longname" if "longname" in details.columns else "name"
    names = set(details[column])
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
