"""How much of Ray's own console output a run shows: one rule for every stage.

rayfolio's progress goes through ``logging`` (names under ``rayfolio.``; the
CLI installs the one handler and sets the level with ``--quiet``/``--verbose``).
Ray's output (its log lines, workers' stdout/stderr, Ray Data progress, Tune's
status tables) is shown only when rayfolio logs at DEBUG, which ``--verbose``
sets; library use without a configured level stays quiet too. It lives in
data/, the lowest folder, so that training/, rl/ and cluster/ share it.
"""

from __future__ import annotations

import logging


def ray_output_shown() -> bool:
    return logging.getLogger("rayfolio").isEnabledFor(logging.DEBUG)


def tune_verbosity() -> int:
    """``tune.RunConfig(verbose=...)``: 1 prints status tables (not every result), 0 nothing."""
    return 1 if ray_output_shown() else 0
