"""The runtime: a trained split-learning run on disk and the processes that train and serve it.

- :mod:`pgsl.runtime.run`: :class:`Run` (``config.json``, ``checkpoint.pt``, ``metrics.json``),
  :func:`train_run`, :func:`load_run` and :func:`evaluate_run` on top of it -- what the CLI, the
  FLARE apps, the experiments and a user's own code call;
- :mod:`pgsl.runtime.server`: :func:`run_server`, the computation server every site trains
  against (``pgsl server``), and :func:`server_party`, the seeded server party FLARE's server
  app hosts too.

Experiments (:mod:`pgsl.experiments`) are built on this package; it imports none of them.
"""

from __future__ import annotations

from pgsl.runtime.run import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    LogReporter,
    Reporter,
    Run,
    environment,
    evaluate_run,
    load_run,
    resolve_device,
    train_run,
)

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "LogReporter", "Reporter", "Run", "environment",
           "evaluate_run", "load_run", "resolve_device", "train_run"]
