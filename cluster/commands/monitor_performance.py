"""``rayfolio monitor performance``."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("performance", help="(being built)")
    parser.set_defaults(func=lambda args: 2)
