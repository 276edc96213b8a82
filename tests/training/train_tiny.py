"""Train the tiny AnyECG tokenizer on a store; run by the training-loop tests (also under torchrun).

    python train_tiny.py STORE OUT STEPS [--batch-size N] [--dump-ranks]

Only the 12-lead 10 s records are used, so every rank's batch has the same number of tokens and a
DDP run's averaged gradient equals one process's gradient over the same global batch. Codebook
seeding, restarts and EMA codes are off: they rewrite the codes outside the optimiser, which an FSDP
shard does not see.
"""

import argparse
import os

import numpy as np
import torch

from anyecg.data.dataset import StoreWindows, collate_windows
from anyecg.data.store import Store
from anyecg.models.presets import tokenizer_config
from anyecg.models.tokenizer import Tokenizer
from anyecg.training.loop import TrainConfig, train
from anyecg.training.pretrain import model_config

parser = argparse.ArgumentParser()
parser.add_argument("store")
parser.add_argument("out")
parser.add_argument("steps", type=int)
parser.add_argument("--batch-size", type=int, default=4)
parser.add_argument("--dump-ranks", action="store_true", help="save each rank's parameters as rankR.pt")
parser.add_argument("--fsdp", action="store_true")
args = parser.parse_args()

torch.manual_seed(0)
store = Store(args.store)
windows = StoreWindows(store, random_crop=True, seed=0, rows=np.flatnonzero(store.manifest["n_leads"].to_numpy() == 12))
config = tokenizer_config("anyecg-tiny", kmeans_init=False, restart_after=0, ema_decay=0.0)
model = Tokenizer(config)
train_config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=1e-3, warmup_steps=2,
                           save_every=2, log_every=1, seed=0, fsdp=args.fsdp)
train(model, windows, collate_windows, train_config, args.out,
      model_config=model_config("tokenizer", "anyecg-tiny", config, None), recipe_json=store.recipe.to_json())
if args.dump_ranks:  # each rank's own (for FSDP: sharded) parameters
    rank = int(os.environ.get("RANK", "0"))
    local = {k: getattr(v, "_local_tensor", v).detach().clone() for k, v in model.state_dict().items()}
    torch.save(local, os.path.join(args.out, f"rank{rank}.pt"))
