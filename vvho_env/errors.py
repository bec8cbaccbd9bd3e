"""The one base class of every error a user can see, and the "did you mean" hint its messages share.

Every package raises subclasses of ``VVHOError`` for bad input or an unusable state (a config field, a
knob, a scenario, a run id, a bundle, a backend fault). The CLI turns any of them into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback. It lives in vvho_env, the
lowest layer, so that every package can subclass it without importing upwards.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VVHOError(Exception):
    """An error the user can act on; the message says what was wrong, where, and what is accepted."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
