"""The ``rayfolio`` command line: parses, then hands over to one command module
(cluster/commands/). Known errors end as one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from rayfolio.cluster.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayfolio",
        description="Explained, risk-checked portfolio recommendations from daily price panels, on Ray.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"rayfolio.cluster.commands.{name}").register(commands)
    return parser


def _expected_errors() -> tuple[type[Exception], ...]:
    """The errors a user can cause (bad files, configs, names); imported only once a command runs."""
    from rayfolio.cluster.config import ConfigError
    from rayfolio.cluster.submit import SubmitError
    from rayfolio.data.schema import PanelValidationError
    from rayfolio.data.store import FeatureStoreError
    from rayfolio.serving.auth import KeyConfigError
    from rayfolio.training.registry import RegistryError

    return (ConfigError, PanelValidationError, FeatureStoreError, RegistryError, KeyConfigError, SubmitError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    expected = _expected_errors()
    try:
        code = args.func(args)
    except expected as err:
        print(f"rayfolio: error: {err}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
