"""Health figures of an AnyECG checkpoint on a prepared store's held-out records.

    python benchmarks/tokenizer_health.py --data store/ [--model runs/pretrain] [--out health.json]

Without `--model`, the checkpoint shipped in the package. The figures and their baselines are
described in `anyecg.evaluation.tokenizer_health`; the JSON also says what they were measured on
and how long it took. A store whose val/test records were in the model's pretraining data
measures memorisation, not health: use records the model never saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from anyecg.data.store import Store
from anyecg.evaluation.tokenizer_health import tokenizer_health
from anyecg.pretrained import AnyECG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared store with train and val/test records")
    parser.add_argument("--model", type=Path, default=None, help="AnyECG checkpoint (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    store = Store(args.data)
    health = tokenizer_health(AnyECG.from_pretrained(args.model), store, seed=args.seed)
    report = {
        "model": str(args.model or "shipped anyecg-small"),
        "store": str(args.data),
        "held_out_records": int(store.manifest["split"].isin(["val", "test"]).sum()),
        "train_records": int((store.manifest["split"] == "train").sum()),
        **health,
        "wall_s": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
