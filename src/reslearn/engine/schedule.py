"""Learning-rate policies by iteration (He et al. 2016 count iterations, not epochs)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from ..config import ScheduleConfig


class LRPolicy:
    """The learning rate at each iteration, with the state that decides it.

    - ``step``: lr x gamma at each milestone (CIFAR: /10 at 32k and 48k, stop at 64k).
    - ``plateau``: lr x gamma when the eval error has not improved for ``patience`` evaluations
      ("divided by 10 when the error plateaus", ImageNet, Sec. 3.4).
    - ``cosine``: half a cosine from lr to ``min_lr``.
    - ``exponential``: lr x gamma every ``decay_every`` iterations, staircase (Inception-v4:
      x0.94 every two epochs).
    - warm-up (Sec. 4.2, 110 layers): ``warmup_lr`` until the training error over the last 50
      iterations is below ``warmup_until_error`` percent (or ``warmup_max_iterations`` pass);
      ``warmup_kind="linear"``: from ``warmup_lr`` up to the base lr, linearly, over
      ``warmup_max_iterations`` (Goyal et al. 2017's gradual warm-up). With ``cosine`` the cosine
      still counts from iteration 0, so it resumes a little below lr (cos(pi W / T)) after it.
    - ``onecycle`` (Smith & Topin 2018): ``torch.optim.lr_scheduler.OneCycleLR``'s learning rate at
      each iteration (max_lr = lr, total_steps = iterations, two phases), without its momentum cycle.
    """

    WINDOW = 50

    def __init__(self, cfg: ScheduleConfig, base_lr: float) -> None:
        self.cfg, self.base_lr = cfg, base_lr
        self.warming = cfg.warmup_lr > 0
        self.window: deque[tuple[float, float]] = deque(maxlen=self.WINDOW)
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_evals = 0

    def lr(self, it: int) -> float:
        c = self.cfg
        if self.warming:
            if c.warmup_kind == "linear":
                return c.warmup_lr + (self.base_lr - c.warmup_lr) * it / c.warmup_max_iterations
            return c.warmup_lr
        if c.kind == "step":
            return self.base_lr * c.gamma ** sum(it >= m for m in c.milestones)
        if c.kind == "plateau":
            return max(self.base_lr * self.plateau_scale, c.min_lr)
        if c.kind == "exponential":
            return self.base_lr * c.gamma ** (it // c.decay_every)
        if c.kind == "onecycle":
            return onecycle_lr(c, self.base_lr, it)
        return c.min_lr + 0.5 * (self.base_lr - c.min_lr) * (1 + math.cos(math.pi * it / c.iterations))

    def after_step(self, it: int, wrong: float, n: float) -> None:
        if not self.warming:
            return
        self.window.append((wrong, n))
        err = 100.0 * sum(w for w, _ in self.window) / max(sum(k for _, k in self.window), 1)
        full = len(self.window) == self.window.maxlen
        by_error = full and err < self.cfg.warmup_until_error and self.cfg.warmup_kind == "constant"
        if by_error or it + 1 >= self.cfg.warmup_max_iterations:
            self.warming = False

    def after_eval(self, error: float) -> None:
        if self.cfg.kind != "plateau" or self.warming:
            return
        if error < self.best - 1e-9:
            self.best, self.bad_evals = error, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.cfg.patience:
                self.plateau_scale *= self.cfg.gamma
                self.bad_evals = 0

    def state_dict(self) -> dict[str, Any]:
        return {"warming": self.warming, "window": list(self.window), "plateau_scale": self.plateau_scale,
                "best": None if math.isinf(self.best) else self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.warming = d["warming"]
        self.window = deque((tuple(x) for x in d["window"]), maxlen=self.WINDOW)
        self.plateau_scale = d["plateau_scale"]
        self.best = math.inf if d["best"] is None else d["best"]
        self.bad_evals = d["bad_evals"]


def onecycle_lr(c: ScheduleConfig, max_lr: float, it: int) -> float:
    """OneCycleLR's two-phase value at step ``it`` (its ``_anneal_func`` and phase boundaries:
    the rise ends at step pct_start x total - 1, the fall at total - 1)."""
    initial = max_lr / c.onecycle_div_factor
    phases = ((0.0, c.onecycle_pct_start * c.iterations - 1, initial, max_lr),
              (c.onecycle_pct_start * c.iterations - 1, c.iterations - 1, max_lr, initial / c.onecycle_final_div_factor))
    start_step, end_step, start, end = phases[0] if it <= phases[0][1] else phases[1]
    pct = (it - start_step) / (end_step - start_step) if end_step > start_step else 1.0
    if c.onecycle_anneal == "linear":
        return (end - start) * pct + start
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
