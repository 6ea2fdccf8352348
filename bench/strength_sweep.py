"""A defence's strength over seeds, in the configuration of the test suite's one-seed strength test
(tests/test_baselines.py): the quick preset on 2,048 MNIST images for one epoch, 512 test images;
the learned inversion (MIA on MSE, 1,000 auxiliary images, 4 epochs, 64 victims). Per seed and
setting: the decision accuracy, MIA's MSE and its ratio to the vanilla split's on the same seed;
then mean +- std over seeds. Use it to choose a test's strengths and tolerances from measurements.

Run: ``python bench/strength_sweep.py OUT --defense ressfl --knob weight --values 0,0.3,3
--option bottleneck=2 --seeds 0,1,2`` (~15 s per vanilla or bottleneck run, ~28 s per ResSFL run
with its min-max, 2 cores). Runs complete in OUT are reused, a killed one resumes."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from pgsl.config import load_preset, parse_value
from pgsl.experiments.cache import ensure_trained
from pgsl.experiments.privacy import PrivacyConfig, evaluate_privacy

PRIVACY = PrivacyConfig(victims=64, aux=1000, attacks=("mia",), budgets={"mia": {"epochs": 4}})


def point(out: Path, defense: str, params: dict[str, int | float], seed: int) -> tuple[float, float]:
    """(decision accuracy, MIA's mean MSE) of the run in ``out``, trained first unless complete
    there (a folder holding a run of another configuration is refused)."""
    cfg = load_preset("quick").replace(data={"limit_train": 2048, "limit_test": 512},
                                       defense={"kind": defense, "params": params}, train={"seed": seed})
    metrics = ensure_trained(cfg, out)
    (mia,) = evaluate_privacy(out, PRIVACY)[0]
    return float(metrics["test_accuracy"]["decision"]), float(mia.mse_mean)


def _number(text: str) -> int | float:
    """"2" -> 2, "0.3" -> 0.3, read by :func:`pgsl.config.parse_value` as the CLI reads options (an
    int where the text is one: a float option takes it widened); anything else: ValueError."""
    value = parse_value(text)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {text!r}")
    return value


def _numbers(text: str) -> list[int | float]:
    try:
        return [_number(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _seeds(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _option(text: str) -> tuple[str, int | float]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, _number(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--defense", required=True)
    ap.add_argument("--knob", required=True)
    ap.add_argument("--values", type=_numbers, required=True, help="comma-separated strengths")
    ap.add_argument("--option", type=_option, action="append", default=[], help="KEY=VALUE, fixed")
    ap.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated")
    args = ap.parse_args()
    values, seeds = args.values, args.seeds
    fixed = dict(args.option)
    settings: list[tuple[str, str, dict[str, int | float]]] = [("vanilla", "none", {})]
    settings += [(f"{args.knob}={v:g}", args.defense, {**fixed, args.knob: v}) for v in values]
    rows: list[tuple[int, str, float, float, float]] = []  # seed, setting, accuracy, MSE, ratio
    for seed in seeds:
        vanilla_mse = float("nan")
        for label, defense, params in settings:
            start = time.perf_counter()
            accuracy, mse = point(args.out / f"seed{seed}-{label}", defense, params, seed)
            if label == "vanilla":
                vanilla_mse = mse
            rows.append((seed, label, accuracy, mse, mse / vanilla_mse))
            print(json.dumps({"seed": seed, "setting": label, "accuracy": accuracy, "mse": mse,
                              "ratio": round(mse / vanilla_mse, 3),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    print(f"\n{args.defense} {fixed or ''}, seeds {', '.join(map(str, seeds))}: accuracy % "
          "(mean +- std), MIA MSE (mean +- std), ratio to the vanilla split's on the same seed")
    for label, _, _ in settings:
        acc = [100 * r[2] for r in rows if r[1] == label]
        mses = [r[3] for r in rows if r[1] == label]
        ratio = [r[4] for r in rows if r[1] == label]
        print(f"{label:>14}  {' / '.join(f'{a:.1f}' for a in acc)} ({statistics.mean(acc):.1f} +- "
              f"{_std(acc):.1f})  {' / '.join(f'{m:.4f}' for m in mses)} ({statistics.mean(mses):.4f} +- "
              f"{_std(mses):.4f})  x {' / '.join(f'{r:.2f}' for r in ratio)}")


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


if __name__ == "__main__":
    main()
