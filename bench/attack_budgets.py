"""Is an attack converged at its budget? One attack at several budgets against runs trained as the
quick benchmark trains them (the quick preset on 2,500 MNIST images for one epoch, 1,000 test
images, seed 0; by default 64 victims, 800 auxiliary images): per defence, target and budget, the
attack's MSE, SSIM and seconds. A budget whose error falls a lot when doubled was not an attacker's best.

Run: ``python bench/attack_budgets.py OUT mia --defense none --defense dp:sigma=0.02
--budget epochs=3 --budget epochs=3,batch_size=16 --budget epochs=20 --fixed loss=mse+ssim``
(the runs are trained once into OUT and reused, a killed one resumes; ~15-30 s per run, then the
attack's seconds per budget). A defence is named with its own options (``[defense.params]``):
PGSL's run is the quick preset's (mu 0.55, four pixels)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pgsl.config import load_preset, parse_value
from pgsl.experiments.cache import ensure_trained
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy


def _pairs(text: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values as :func:`pgsl.config.parse_value` reads
    them); empty text -> ``{}``."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        out[key] = parse_value(value)
    return out


def _defense(text: str) -> tuple[str, dict[str, Any]]:
    """``"dp:sigma=0.02"`` -> ``("dp", {"sigma": 0.02})``."""
    kind, _, options = text.partition(":")
    return kind, _pairs(options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("attack")
    ap.add_argument("--defense", type=_defense, action="append", required=True,
                    help="NAME[:KEY=VALUE,...], repeatable")
    ap.add_argument("--budget", type=_pairs, action="append", required=True,
                    help="KNOB=VALUE,..., repeatable: one budget per flag")
    ap.add_argument("--fixed", type=_pairs, default={}, help="KNOB=VALUE,... in every budget")
    ap.add_argument("--aux", type=int, default=800, help="auxiliary images (the quick plan's: 800)")
    ap.add_argument("--victims", type=int, default=64)
    args = ap.parse_args()
    budgets = [{**args.fixed, **budget} for budget in args.budget]
    # every protocol is checked (attack name, budget knobs) before anything trains
    try:
        protocols = [PrivacyConfig(victims=args.victims, aux=args.aux, attacks=(args.attack,),
                                   budgets={args.attack: budget}) for budget in budgets]
    except (KeyError, ValueError) as err:
        ap.error(str(err))
    for kind, params in args.defense:
        path = args.out / (kind + "".join(f"-{k}-{v}" for k, v in params.items()))
        cfg = load_preset("quick").replace(data={"limit_train": 2500, "limit_test": 1000},
                                           defense={"kind": kind, "params": params}, train={"seed": 0})
        ensure_trained(cfg, path)
        for budget, pc in zip(budgets, protocols, strict=True):
            for row in evaluate_privacy(path, pc)[0]:
                print(json.dumps({"defense": kind, "params": params, "target": row.target, "budget": budget,
                                  "mse": row.mse_mean, "ssim": row.ssim_mean, "seconds": row.seconds}),
                      flush=True)

if __name__ == "__main__":
    main()
