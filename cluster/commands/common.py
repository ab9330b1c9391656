"""Arguments several command groups share."""

from __future__ import annotations

import argparse
from pathlib import Path


def config_and_address(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", type=Path, help="run config YAML (default: the built-in quickstart)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local dev mode)")
    return parser


def registry_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--registry", type=Path, help="registry (default: the config's, RAYFOLIO_REGISTRY, runs/registry)"
    )
    return parser
