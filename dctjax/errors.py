"""User mistakes (a bad config field, data not prepared, an unknown name, an empty workdir) end a
`launch/` command with their message and exit code 2; unexpected errors keep their traceback.

    with user_errors():          # around the checks that run before any compilation
        model = families.build(config)

    run_main(main)               # in a launch script: a marked error -> 'error: ...', exit 2
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

USAGE_EXIT_CODE = 2

# What the config, data and workdir checks raise for a user's mistake.
USER_MISTAKES = (ValueError, FileNotFoundError, KeyError, AttributeError)


def mark(e: BaseException) -> BaseException:
    """Marks `e` as a user's mistake (its type is kept, so callers can still catch it as usual)."""
    e.dctjax_user_error = True  # type: ignore[attr-defined]
    return e


def is_user_error(e: BaseException) -> bool:
    return bool(getattr(e, "dctjax_user_error", False))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Marks the ValueError / FileNotFoundError / KeyError / AttributeError (a config field that
    does not exist) raised inside as user mistakes and re-raises them unchanged."""
    try:
        yield
    except USER_MISTAKES as e:
        mark(e)
        raise


def run_main(main: Callable[..., Any], *args: Any) -> Any:
    """Calls main(*args); a user's mistake prints 'error: message' and exits with code 2."""
    try:
        return main(*args)
    except Exception as e:
        if not is_user_error(e):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
