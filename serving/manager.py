"""Keeps the Production model loaded: first load, polling for promotions, atomic swaps.

``current`` is the only shared state and is replaced by one assignment, never mutated: requests
read it once and keep their object, so a swap never fails or mixes versions. Registry outages
leave ``current`` as it was (the last good model keeps serving); with no model yet, /ready says
503 and the loop retries every ``retry_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from serving.loading import configure_mlflow_client, load_version, resolve_production_version
from serving.model import LoadedModel

log = logging.getLogger("netsec.serving")


class ModelManager:
    def __init__(
        self,
        settings,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_check: Callable[[dict[str, str]], None] | None = None,
    ):
        self.settings = settings
        self.current: LoadedModel | None = None
        # Called with the Production version's tags on every check (monitoring figures).
        self.on_check = on_check
        self.last_error: str | None = None
        self.last_check: dt.datetime | None = None
        self.on_swap = on_swap
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Load and poll in the background: the server answers /health (and /ready 503) at once,
        even when the registry is down or slow."""
        configure_mlflow_client(self.settings)
        self._task = asyncio.create_task(self._poll_forever(), name="netsec-model-poll")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def refresh(self) -> bool:
        """Check the registry once; load and swap in a new Production version. True if swapped."""
        try:
            return await asyncio.to_thread(self._refresh_blocking)
        except Exception as exc:  # any failure keeps the last good model serving
            self.last_error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("model refresh failed: %s", self.last_error)
            return False
        finally:
            self.last_check = dt.datetime.now(dt.UTC)

    def _refresh_blocking(self) -> bool:
        client, mv = resolve_production_version(self.settings)
        current = self.current
        if current is not None and current.name == mv.name and current.version == str(mv.version):
            self.last_error = None
            self._checked(mv)
            return False
        # Load beside the old one; requests keep using the old object until the assignment.
        loaded = load_version(self.settings, client, mv)
        self.current = loaded
        self.last_error = None
        log.info(
            "serving %s version %s (was %s)",
            loaded.name,
            loaded.version,
            current.version if current else "none",
        )
        if self.on_swap:
            self.on_swap(loaded)
        self._checked(mv)
        return True

    def _checked(self, mv) -> None:
        if self.on_check:
            try:
                self.on_check(dict(mv.tags or {}))
            except Exception as exc:  # figures are informative: never fail a refresh over them
                log.warning("could not read the monitoring figures of v%s: %s", mv.version, exc)

    async def _poll_forever(self) -> None:
        while True:
            await self.refresh()
            wait = (
                self.settings.poll_interval_seconds
                if self.current is not None
                else self.settings.retry_interval_seconds
            )
            await asyncio.sleep(wait)
