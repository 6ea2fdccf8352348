"""ResSFL probe: the vanilla split, a 2-channel bottleneck, and ResSFL with narrow bottlenecks and a
stronger simulated attacker, each attacked by the learned inversion (MIA); one seed, the quick preset
on 2,048 MNIST images. Run: ``python bench/ressfl_probe.py OUT`` (~3 min on 2 cores)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pgsl.config import load_preset
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy
from pgsl.experiments.train import train_run

POINTS = [
    ("vanilla", "none", {}),
    ("bottleneck 2", "ressfl", {"weight": 0.0, "bottleneck": 2}),
    ("bottleneck 2, weight 3, 3 decoder steps", "ressfl",
     {"weight": 3.0, "ssim_threshold": 0.0, "bottleneck": 2, "decoder_steps": 3}),
    ("bottleneck 1, weight 10, 3 decoder steps", "ressfl",
     {"weight": 10.0, "ssim_threshold": 0.0, "bottleneck": 1, "decoder_steps": 3}),
]


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    base = load_preset("quick").replace(data={"limit_train": 2048, "limit_test": 512})
    pc = PrivacyConfig(victims=64, aux=1000, attacks=("mia",), budgets={"mia": {"epochs": 4}})
    print(f"{'setting':<42} {'accuracy':>8} {'MIA MSE':>8} {'SSIM':>6} {'seconds':>7}")
    for i, (name, kind, params) in enumerate(POINTS):
        t0 = time.perf_counter()
        metrics = train_run(base.replace(defense={"kind": kind, "params": params}), root / str(i))
        (mia,) = evaluate_privacy(root / str(i), pc)[0]
        print(f"{name:<42} {metrics['test_accuracy']['decision']:>8.4f} {mia.mse_mean:>8.4f} "
              f"{mia.ssim_mean:>6.3f} {time.perf_counter() - t0:>7.0f}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
