"""Monitor gauges that outlive the command that measured them.

A gauge set with ``ray.util.metrics`` is exported only while it is set again and again: Ray's
metrics agent drops a value some 15-25 s after it was last recorded (measured here, whether or not
the process that set it lives on). ``rayfolio monitor drift|performance`` and
``rayfolio daily`` end in seconds, while the alert rules ask for a level held for 10 minutes (drift)
or more: so the levels are handed to one detached, named actor (``rayfolio-monitor-gauges``, no CPU)
that keeps them and records them again every ``REFRESH_S`` seconds in its own long-lived process,
so they stay exported until the next run replaces them. In local dev mode the actor ends with the
local Ray, as everything else does.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping

HOLDER = "rayfolio-monitor-gauges"
NAMESPACE = "rayfolio"
REFRESH_S = 5.0  # well inside the export's staleness window


class GaugeHolder:
    """Holds each gauge by name and its latest value per tag; records them all every ``REFRESH_S``."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[object, str, dict[str, float]]] = {}  # name -> (gauge, tag key, values)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._refresh, name="gauge-refresh", daemon=True).start()

    def set(self, name: str, description: str, tag_key: str, values: Mapping[str, float]) -> int:
        """Replace the values of the tags given (others keep theirs); record them now."""
        from ray.util import metrics

        with self.lock:
            if name not in self.gauges:
                self.gauges[name] = (metrics.Gauge(name, description, tag_keys=(tag_key,)), tag_key, {})
            self.gauges[name][2].update({tag: float(v) for tag, v in values.items()})
            self._record()
        return len(values)

    def _record(self) -> None:
        for gauge, tag_key, values in self.gauges.values():
            for tag, value in values.items():
                gauge.set(value, tags={tag_key: tag})

    def _refresh(self) -> None:
        while not self.stop.wait(REFRESH_S):
            with self.lock:
                self._record()


def hold_gauge(name: str, description: str, tag_key: str, values: Mapping[str, float]) -> bool:
    """Set ``name{tag_key=tag} = value`` for each of ``values`` in the holder actor (started on first
    use); False when this process is not connected to Ray (no exporter to reach)."""
    ray = sys.modules.get("ray")  # never imported: not initialised (and importing Ray costs a second)
    if ray is None or not ray.is_initialized():
        return False
    holder = (
        ray.remote(num_cpus=0)(GaugeHolder)
        .options(name=HOLDER, namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
        .remote()
    )
    ray.get(holder.set.remote(name, description, tag_key, dict(values)))
    return True
