"""The ``rayfolio`` command line: parses, sets up logging, then hands over to
one command module (cluster/commands/). Known errors end as one line on stderr
with exit code 2, also when Ray raised them from inside a task.

Output: a command's result (tables, summaries, the report's path) goes to
stdout; progress (rayfolio's log records: stage lines, timings) and errors go
to stderr, so ``rayfolio models list > models.txt`` keeps only the result and
every diagnostic, Ray's included, is on one stream.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rayfolio.cluster.commands import COMMAND_MODULES

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayfolio",
        description="Explained, risk-checked portfolio recommendations from daily price panels, on Ray.",
    )
    _verbosity_flags(parser, default=NORMAL)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"rayfolio.cluster.commands.{name}").register(commands)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser (``run``, ``data``, ``data prepare`` ...: nested sub-parsers
    inherit the class): ``rayfolio run --verbose`` as well as ``rayfolio --verbose run``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        _verbosity_flags(self, default=argparse.SUPPRESS)


def _verbosity_flags(parser: argparse.ArgumentParser, default: object) -> None:
    # SUPPRESS on sub-commands: a flag not given there leaves the top-level choice alone.
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=default,
                       help="warnings and errors only")  # fmt: skip
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=default,
                       help="debug messages, and Ray's own output: its logs, workers' output, Ray Data progress, "
                       "Tune status tables")  # fmt: skip


class _Console(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: int) -> None:
    """The one handler: rayfolio's records as plain lines on stderr, at ``level``."""
    root = logging.getLogger("rayfolio")
    for handler in [h for h in root.handlers if isinstance(h, _Console)]:
        root.removeHandler(handler)  # main() may run more than once in a process (tests)
    handler = _Console()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


@contextmanager
def _tune_console(level: int) -> Iterator[None]:
    """Tune's console output for this command: with ``--verbose`` its status tables
    (``tune_verbosity()`` is 1), otherwise nothing. At verbose=0 Tune's default output
    engine still prints an experiment box per search; its legacy engine prints nothing.
    Tune reads the switch when a search starts; it is restored when the command ends."""
    if level <= VERBOSE:
        yield
        return
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


# The errors a user can cause (bad files, configs, names, keys): (module, class).
EXPECTED_ERRORS = (
    ("rayfolio.cluster.config", "ConfigError"),
    ("rayfolio.data.schema", "PanelValidationError"),
    ("rayfolio.data.store", "FeatureStoreError"),
    ("rayfolio.data.splits", "SplitError"),
    ("rayfolio.training.registry", "RegistryError"),
    ("rayfolio.serving.auth", "KeyConfigError"),
    ("rayfolio.cluster.submit", "SubmitError"),
    ("rayfolio.serving.live_performance", "LivePerformanceError"),
)


def _expected_errors() -> tuple[type[Exception], ...]:
    """The expected error classes whose modules are loaded: an error cannot come from a module
    never imported, and importing one (the registry loads torch) would slow every refusal."""
    return tuple(getattr(sys.modules[m], name) for m, name in EXPECTED_ERRORS if m in sys.modules)


def user_error(err: BaseException, expected: tuple[type[Exception], ...]) -> Exception | None:
    """The expected error behind ``err``, or None: ``err`` itself, or what it wraps.

    Ray re-raises an error from a task as ``RayTaskError(<original class>)``,
    whose text is the worker's whole traceback; its ``cause`` is the original.
    Explicit chains (``raise ... from err``) are followed too, implicit ones
    (an error while handling another) are not: that is a bug to show in full.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        wrapped = getattr(current, "cause", None)
        if isinstance(wrapped, BaseException):  # a Ray wrapper
            current = wrapped
            continue
        if isinstance(current, expected):
            return current
        current = current.__cause__
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbosity)
    try:
        with _tune_console(args.verbosity):
            code = args.func(args)
    except Exception as err:
        known = user_error(err, _expected_errors())
        if known is None:
            raise
        one_line = " ".join(line.strip() for line in str(known).splitlines() if line.strip())
        print(f"rayfolio: error: {one_line}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
