"""``rayfolio monitor drift|performance|check``: watching a service on day two.

Each sub-command's arguments and handler live in its own module (``monitor_drift``,
``monitor_performance``, ``monitor_check``); this module only groups them.
"""

from __future__ import annotations

from rayfolio.cluster.commands import monitor_check, monitor_drift, monitor_performance


def register(commands) -> None:
    monitor = commands.add_parser("monitor", help="drift, live performance and the alert check")
    sub = monitor.add_subparsers(dest="monitor_command", required=True, metavar="MONITOR_COMMAND")
    for module in (monitor_drift, monitor_performance, monitor_check):
        module.register(sub)
