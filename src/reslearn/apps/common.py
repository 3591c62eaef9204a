"""Small pieces the application data builders share: the shared split fields (``data.val_size``,
``data.test_size``, ``data.train_subset``, ``data.test_subset``) applied to data sets that are
one pool of samples with no test split of their own (steganalysis pairs, UTKFace faces)."""

from __future__ import annotations

from typing import Any

from ..data.arrays import held_out, keep_random
from ..errors import ReslearnError

__all__ = ["held_out_shares", "cut_splits"]


def held_out_shares(cfg: Any, n: int, *, what: str) -> tuple[float, float]:
    """``(test share, val share)`` of the ``n`` samples of ``cfg.name`` from ``data.test_size`` and
    ``data.val_size``, each a count or a share 0 < x < 1 (:func:`reslearn.data.arrays.held_out`).
    A count ``c`` is passed on as the share ``c / n``, which the data set's split rounds back to
    ``c``. The test split is required; the validation split is optional (0: none)."""
    if not cfg.test_size:
        raise ReslearnError(f"data.test_size must hold out the test split of {cfg.name}: a share 0 < x < 1 "
                            f"(e.g. 0.2) or a count of its {n} {what}")
    shares = []
    for key, size in (("data.test_size", cfg.test_size), ("data.val_size", cfg.val_size)):
        count = held_out(size, n, key=key, name=f"{cfg.name} ({what})")
        shares.append(size if isinstance(size, float) else count / n)
    if shares[0] + shares[1] >= 1.0:
        raise ReslearnError(f"data.test_size + data.val_size must leave training {what} of {cfg.name}; "
                            f"got {cfg.test_size} + {cfg.val_size} of {n}")
    return shares[0], shares[1]


def cut_splits(cfg: Any, train: Any, held: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``train`` cut to ``data.train_subset`` and each held-out split to ``data.test_subset``,
    fixed random subsets drawn by ``data.split_seed`` (0: all)."""
    return (keep_random(train, cfg.train_subset, seed=cfg.split_seed),
            {k: keep_random(v, cfg.test_subset, seed=cfg.split_seed) for k, v in held.items()})
