"""Durations in one unit (steps) and "is it time to act at step s" (after big_vision's get_steps and
itstime).

Step convention: `step` is the number of updates done (`state.step` after the update), 1..total.
A config may give a duration as `{prefix}_steps`, `{prefix}_epochs`, `{prefix}_examples` or (for a
family that counts loss-bearing tokens, e.g. the DCTransformer's target elements) `{prefix}_tokens`,
or as the bare `{prefix}` in steps (exactly one of them; None counts as unset), e.g. total_steps,
log_every (steps), checkpoint_every_epochs, sample_every_examples, total_tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_REQUIRED = object()


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping) or hasattr(config, "get"):
        return config.get(key)
    return getattr(config, key, None)


def steps_from(
    config: Any,
    prefix: str,
    *,
    batch_size: int | None = None,
    num_examples: int | None = None,
    tokens_per_example: int | None = None,
    default: Any = _REQUIRED,
) -> int | Any:
    """`{prefix}_steps`, or epochs/examples/tokens converted to steps (floored).

    Args:
      config: a ConfigDict, a mapping or an object with attributes.
      prefix: e.g. 'total', 'log_every', 'ckpt_every'.
      batch_size: the global batch size (needed for epochs and examples).
      num_examples: examples in one epoch (needed for epochs).
      tokens_per_example: tokens per example (needed for tokens; a step trains batch_size times
        that many, so tokens convert to a lower bound on the steps when examples hold fewer).
      default: returned when none of the three is set; without it that is a ValueError.
    """
    names = {
        "": prefix, **{u: f"{prefix}_{u}" for u in ("steps", "epochs", "examples", "tokens")}
    }  # fmt: skip
    given = {
        unit: value for unit, name in names.items() if (value := _get(config, name)) is not None
    }
    if len(given) > 1:
        raise ValueError(f"Give only one of {', '.join(names[u] for u in given)} (all are set).")
    if not given:
        if default is _REQUIRED:
            raise ValueError(
                f"Set one of {prefix}_steps, {prefix}_epochs, {prefix}_examples or {prefix}_tokens."
            )
        return default
    (unit, value), *_ = given.items()
    if unit in ("", "steps"):
        if int(value) != value:
            raise ValueError(f"{names[unit]} must be an integer number of steps, got {value}.")
        return int(value)
    if not batch_size or batch_size < 1:
        raise ValueError(f"{prefix}_{unit} needs a positive batch_size.")
    if unit == "examples":
        return int(value) // batch_size
    if unit == "tokens":
        if not tokens_per_example:
            raise ValueError(
                f"{prefix}_tokens is only for families that count tokens (e.g. autoregressive); "
                f"give {prefix}_steps, _epochs or _examples."
            )
        return int(value) // (batch_size * int(tokens_per_example))
    if not num_examples or num_examples < 1:
        raise ValueError(f"{prefix}_epochs needs the number of examples in an epoch.")
    return int(value * num_examples) // batch_size


def is_periodic(
    step: int,
    every: int | None,
    total: int | None = None,
    *,
    first: bool = False,
    last: bool = True,
    drop_close_to_last: float = 0.25,
) -> bool:
    """True when an action runs at `step`.

    It fires when `step % every == 0`, except within `drop_close_to_last * every` steps before
    `total` (the final step acts anyway when `last`, so an almost-duplicate action is skipped);
    at `step == total` when `last`; at step 1 when `first`. `every` of None or <= 0 means never
    periodically (first/last still apply).
    """
    is_last = total is not None and step == total
    if last and is_last:
        return True
    if first and step == 1:
        return True
    if not every or every <= 0 or step % every:
        return False
    if total is not None and 0 < total - step < drop_close_to_last * every:
        return False
    return True
