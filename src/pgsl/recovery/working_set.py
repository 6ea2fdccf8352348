"""The matrices of a batch that an iterative solver still iterates (shared by APG and ADMM).

Each matrix stops on its own test. A stopped matrix is written out at the next check; when at most
half of the working set still runs, the solver drops the stopped rows from its tensors (and its
SVT state), so a few slow matrices do not make the whole batch pay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Write = Callable[[Tensor, Tensor], None]  # (working rows, their matrices) -> write the answers


class WorkingSet:
    """Bookkeeping for ``count`` matrices: which row is which matrix, which still run, and the
    per-matrix ``iterations`` and ``converged`` results."""

    def __init__(self, count: int, device: torch.device) -> None:
        self.index = torch.arange(count, device=device)  # working row -> matrix
        self.active = torch.ones(count, dtype=torch.bool, device=device)
        self.written = torch.zeros(count, dtype=torch.bool, device=device)
        self.its = torch.zeros(count, dtype=torch.long, device=device)
        self.iterations = torch.zeros(count, dtype=torch.long, device=device)
        self.converged = torch.zeros(count, dtype=torch.bool, device=device)

    def step(self, done: Tensor | None = None) -> None:
        """Count one iteration for every running row, then stop the rows that are ``done``."""
        self.its += self.active
        if done is not None:
            self.active = self.active & ~done

    def _retire(self, rows: Tensor, write: Write) -> None:
        where = self.index[rows]
        write(rows, where)
        self.iterations[where] = self.its[rows]
        self.converged[where] = ~self.active[rows]

    def check(self, write: Write) -> tuple[bool, Tensor | None]:
        """Write out the rows stopped since the last check. Returns ``(finished, keep)``: ``keep``
        (the rows still running) when the solver must compact its tensors to them, else None."""
        stopped = ~self.active & ~self.written
        if bool(stopped.any()):
            self._retire(stopped, write)
            self.written |= stopped
        running = int(self.active.sum())
        if running == 0:
            return True, None
        if running > len(self.active) // 2:
            return False, None
        keep = self.active.nonzero().squeeze(1)
        self.index, self.active = self.index[keep], self.active[keep]
        self.written, self.its = self.written[keep], self.its[keep]
        return False, keep

    def finish(self, write: Write) -> None:
        """Write out every row not written yet (those still running did not converge)."""
        self._retire(~self.written, write)
