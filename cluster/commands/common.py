"""Arguments several command groups share."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path


def iso_date(text: str) -> dt.date:
    """An argparse type: a YYYY-MM-DD day."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dates are YYYY-MM-DD, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count of at least 1 (argparse ``type``); anything else is refused naming what was given."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def config_and_address(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, help="run config YAML (default: the built-in quickstart)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local dev mode)")
    return parser


def registry_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--registry", type=Path, help="registry (default: the config's, RAYFOLIO_REGISTRY, runs/registry)"
    )
    return parser
