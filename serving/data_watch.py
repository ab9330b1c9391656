"""A serving object's view of the feature store, kept current while it serves.

``rayfolio data append`` adds dates to the store in place: its ``manifest.json`` is replaced
atomically and its ``version`` goes up by one; old dates keep their index and their features.
Every object that serves from the store's panel (the ingress's service, Ensemble, Allocator,
RiskFilter, Explainer; every replica of each) owns a ``DataWatch``, which notices a new version
by itself, with no restart and no broadcast:

- ``poll()`` on each request: a monotonic clock compare; at most every ``poll_s`` seconds it
  starts a thread that stats the manifest (and reads it only when it changed).
- On a new version that the served models can serve, that thread loads and verifies the new
  panel, calls the owner's ``rebuild(panel)`` (which builds what depends on the panel and swaps
  its references at once), then publishes the panel. Requests in flight finish on the old objects.
- A version the served models cannot serve (other symbols: they need a retrain; old dates that
  moved) is refused with one warning line, and the old data keeps serving.
- ``until(t)``: a request for a date index this object does not have yet (another replica or
  the ingress switched first) reloads at once, in a thread, before it is answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayfolio.data.store import MANIFEST, FeatureStore
from rayfolio.serving.errors import RequestError
from rayfolio.training.panel import Panel

logger = logging.getLogger(__name__)

Stamp = tuple[int, int, int]  # the manifest file's (inode, mtime ns, size): a replaced manifest changes it


@dataclass(frozen=True)
class StoreData:
    """A loaded store version: its panel (verified against the manifest's checksums)."""

    panel: Panel
    version: int
    stamp: Stamp

    @property
    def last_date(self) -> dt.date:
        return self.panel.dates[-1].astype(dt.date)


def manifest_stamp(store: Path) -> Stamp:
    st = os.stat(store / MANIFEST)
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_store(store: Path) -> StoreData:
    """The store's current version, verified. The stamp is taken first: a manifest replaced while
    this reads is seen again (as changed) by the next check."""
    stamp = manifest_stamp(store)
    features = FeatureStore(store)
    features.verify()
    return StoreData(Panel.from_store(features), features.version, stamp)


def unservable(served: Panel, new: Panel) -> str | None:
    """Why the models serving ``served`` cannot serve ``new`` (None: they can). Requests name
    dates by index between deployments, so old dates must keep theirs."""
    if tuple(new.symbols) != tuple(served.symbols):
        added = sorted(set(new.symbols.tolist()) - set(served.symbols.tolist()))
        gone = sorted(set(served.symbols.tolist()) - set(new.symbols.tolist()))
        change = ", ".join(x for x in (added and f"new symbols {', '.join(added[:10])}",
                                       gone and f"symbols gone {', '.join(gone[:10])}") if x)  # fmt: skip
        return f"{change or 'symbols reordered'}: the served models need a retrain on it"
    if new.feature_names != served.feature_names or new.horizons != served.horizons:
        return "its features or label horizons differ from the served store's"
    if len(new.dates) < len(served.dates) or not np.array_equal(new.dates[: len(served.dates)], served.dates):
        return "its dates up to the served last date differ (only appended dates can be picked up)"
    return None


class DataWatch:
    """The current store data of one serving object; see the module docstring.

    ``rebuild(panel)`` runs in a thread (never on the request path) and must swap the owner's
    references only once everything it builds is ready; it raising keeps the old data serving.
    ``lock`` is held while a new version is applied: an owner's model reload takes it too, so
    the two never interleave.
    """

    def __init__(self, store: Path, poll_s: float, rebuild: Callable[[Panel], None], name: str) -> None:
        self.store, self.poll_s, self.rebuild, self.name = Path(store), poll_s, rebuild, name
        self.data = read_store(self.store)
        self.lock = threading.RLock()
        self.reload_s: float | None = None  # the last switch's load + rebuild time (a figure the service reports)
        self._seen = self.data.stamp  # the last manifest looked at, applied or not
        self._due = time.monotonic() + poll_s
        self._checking: threading.Thread | None = None

    @property
    def panel(self) -> Panel:
        return self.data.panel

    def poll(self) -> None:
        """Per request: the clock compare; when due, a background check of the manifest."""
        now = time.monotonic()
        if now < self._due or (self._checking is not None and self._checking.is_alive()):
            return  # not due, or a check (a slow load) still running: never a pile of threads
        self._due = now + self.poll_s
        self._checking = threading.Thread(target=self.refresh, name=f"data-watch-{self.name}", daemon=True)
        self._checking.start()

    def refresh(self) -> bool:
        """Apply the store's newer version now, if there is one the served models can serve
        (blocking; what ``poll`` runs in a thread). True when a new version was applied."""
        with self.lock:
            try:
                if manifest_stamp(self.store) == self._seen:
                    return False
                started = time.perf_counter()
                new = read_store(self.store)
                self._seen = new.stamp
                if new.version <= self.data.version:
                    return False
                reason = unservable(self.data.panel, new.panel)
                if reason is not None:
                    logger.warning("%s: keeps serving feature store version %d (to %s), not version %d: %s",
                                   self.name, self.data.version, self.data.last_date, new.version, reason)  # fmt: skip
                    return False
                self.rebuild(new.panel)
            except Exception as err:  # a store mid-write or unreadable, models that do not load: serve on
                logger.warning("%s: keeps serving feature store version %d: %s", self.name, self.data.version, err)
                return False
            self.data, self.reload_s = new, time.perf_counter() - started
            logger.info("%s: serving feature store version %d (to %s), switched in %.2f s",
                        self.name, new.version, new.last_date, self.reload_s)  # fmt: skip
            return True

    def ensure(self, t: int) -> None:
        """Date index ``t`` is served here once this returns: a new version is loaded first when
        needed (blocking). One that is still not there is a 503 (the store has not got it)."""
        if t >= len(self.panel.dates):
            self.refresh()
            self._check(t)

    async def until(self, t: int) -> None:
        """``ensure`` for a coroutine: the load runs in a thread, the event loop serves on."""
        self.poll()
        if t >= len(self.panel.dates):
            await asyncio.to_thread(self.refresh)
            self._check(t)

    def _check(self, t: int) -> None:
        if t >= len(self.panel.dates):
            raise RequestError("data_not_loaded", f"date index {t} is not in the feature store this replica "
                               f"serves (version {self.data.version}, to {self.data.last_date})", 503)  # fmt: skip

    def describe(self) -> dict:
        """What /readyz shows: the store version and the last date served."""
        return {"version": self.data.version, "last_date": str(self.data.last_date)}
