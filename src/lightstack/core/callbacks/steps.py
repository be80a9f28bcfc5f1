"""Acting once every N optimizer steps from a per-batch hook."""

from __future__ import annotations


class EveryNOptimizerSteps:
    """``due(step)`` is true once for every ``n``-th optimizer step (never for step 0).

    ``trainer.global_step`` counts optimizer steps, so with gradient accumulation it repeats
    over the micro-batches of one step: a plain ``step % n == 0`` would fire on each of them.
    ``n`` of ``None`` or 0 never fires.
    """

    def __init__(self, n: int | None):
        self.n = n
        self._last = -1

    def due(self, step: int) -> bool:
        if not self.n or step == 0 or step % self.n or step == self._last:
            return False
        self._last = step
        return True
