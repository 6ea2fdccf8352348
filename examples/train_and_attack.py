"""Train a split model on MNIST with a defence, then attack it: the Python API in 20 lines.

Run: python examples/train_and_attack.py [OUT_DIR]   (about a minute on 2 CPU cores)
"""

import sys
from pathlib import Path

from pgsl.config import load_preset
from pgsl.experiments.privacy import PrivacyConfig, privacy
from pgsl.runtime import train_run

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/example")
cfg = load_preset("quick").replace(data={"limit_train": 2000, "limit_test": 500},
                                   model={"width": 8}, defense={"kind": "pgsl"})
metrics = train_run(cfg, out / "pgsl")                      # client | cut | server, in one process
print("decision accuracy:", metrics["test_accuracy"]["decision"])

attacks = PrivacyConfig(victims=64, aux=1000, attacks=("mean", "mia", "activation"),
                        budgets={"mia": {"epochs": 5}, "activation": {"victims": 8, "steps": 50}})
for row in privacy([out / "pgsl"], out / "attacks", attacks):  # typed rows, one per attack/target
    print(f"{row.target:>9} {row.attack:>10}: MSE {row.mse_mean:.4f}  SSIM {row.ssim_mean:.3f}")
