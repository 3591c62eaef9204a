"""Small pieces the application data builders share."""

from __future__ import annotations

__all__ = ["check_fractions"]


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    """A held-out test fraction in (0, 1), a validation fraction in [0, 1), together below 1."""
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction + val_fraction must be below 1; got {test_fraction + val_fraction}")
