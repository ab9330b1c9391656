"""``rayfolio monitor check``."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("check", help="(being built)")
    parser.set_defaults(func=lambda args: 2)
