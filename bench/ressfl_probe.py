"""ResSFL probe: does a client trained against its own simulated decoder hide its images from a
fresh one? One seed, the quick preset on 2,048 MNIST images for three epochs; per setting: the
decision accuracy, the learned inversion (MIA on MSE + SSIM, 1,000 auxiliary images, 4 epochs,
64 victims), the SSIM the client's own simulated decoder reaches on test images, and the SSIM of a
fresh decoder of the same architecture trained 8 epochs on 1,024 training images' maps.
Run: ``python bench/ressfl_probe.py OUT`` (~6 min on 2 cores)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from pgsl.config import load_preset
from pgsl.data import to_float
from pgsl.defenses.ressfl import SimulatedInverter
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy
from pgsl.runtime import load_run, train_run
from pgsl.similarity import ssim

POINTS = [
    ("vanilla", "none", {}),
    ("bottleneck 2", "ressfl", {"weight": 0.0, "bottleneck": 2}),
    ("bottleneck 2, weight 1", "ressfl", {"weight": 1.0, "bottleneck": 2}),
    ("bottleneck 2, weight 3", "ressfl", {"weight": 3.0, "bottleneck": 2}),
    ("weight 3, no bottleneck", "ressfl", {"weight": 3.0}),
]


def decoders(run_dir: Path) -> tuple[float, float]:
    """(the client's own simulated decoder's SSIM, a fresh one's) on 256 test images; nan for the
    own one of a run that did not train one."""
    run = load_run(run_dir, torch.device("cpu"))
    client = run.client
    test = to_float(run.dataset.test.images[:256])
    train = to_float(run.dataset.train.images[:1024])
    size = (int(test.shape[-2]), int(test.shape[-1]))
    with torch.no_grad():
        sent, sent_train = client.query(test), client.query(train)
        own = getattr(client.defense, "inverter", None)
        trained = own is not None and client.defense.params.weight > 0
        own_ssim = float(ssim(own(sent, size), test)) if trained else float("nan")
    torch.manual_seed(0)
    fresh = SimulatedInverter(sent.shape[1], test.shape[1], 32)
    opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    for _ in range(8):
        for idx in torch.randperm(len(train)).split(32):
            opt.zero_grad(set_to_none=True)
            (-ssim(fresh(sent_train[idx], size), train[idx])).backward()
            opt.step()
    with torch.no_grad():
        return own_ssim, float(ssim(fresh(sent, size), test))


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    base = load_preset("quick").replace(data={"limit_train": 2048, "limit_test": 512}, train={"epochs": 3})
    pc = PrivacyConfig(victims=64, aux=1000, attacks=("mia",),
                       budgets={"mia": {"epochs": 4, "loss": "mse+ssim"}})
    print(f"{'setting':<26} {'accuracy':>8} {'MIA MSE':>8} {'SSIM':>6} {'own SSIM':>8} "
          f"{'fresh SSIM':>10} {'seconds':>7}")
    for i, (name, kind, params) in enumerate(POINTS):
        t0 = time.perf_counter()
        metrics = train_run(base.replace(defense={"kind": kind, "params": params}), root / str(i))
        (mia,) = evaluate_privacy(root / str(i), pc)[0]
        own, fresh = decoders(root / str(i))
        print(f"{name:<26} {metrics['test_accuracy']['decision']:>8.4f} {mia.mse_mean:>8.4f} "
              f"{mia.ssim_mean:>6.3f} {own:>8.3f} {fresh:>10.3f} {time.perf_counter() - t0:>7.0f}",
              flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
