"""Keeps the Production model and the challenger loaded: first load, polling for promotions,
atomic swaps of each.

``current`` (Production, which answers) and ``challenger`` (scored in shadow, issue 25) are the
only shared state; each is replaced by one assignment, never mutated: requests read each once and
keep their objects, so a swap never fails or mixes versions. Registry outages leave both as they
were (the last good models keep serving); with no Production model yet, /ready says 503 and the
loop retries every ``retry_interval_seconds``. The challenger never holds Production back: it is
looked up and loaded after Production, and a challenger that cannot be loaded is only reported
(``challenger_error``, /model) while Production serves on.

When the challenger is promoted, the version Production moves to is the challenger already
loaded: it is swapped in without a second download (its large batches split across
``batch_threads`` again; in shadow it scores on one thread, so it never takes cores from
Production).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from serving.loading import (
    configure_mlflow_client,
    load_version,
    resolve_challenger_version,
    resolve_production_version,
)
from serving.model import LoadedModel

log = logging.getLogger("netsec.serving")


class ModelManager:
    def __init__(
        self,
        settings,
        on_swap: Callable[[LoadedModel], None] | None = None,
        on_check: Callable[[dict[str, str]], None] | None = None,
        on_challenger: Callable[[LoadedModel | None], None] | None = None,
    ):
        self.settings = settings
        self.current: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        # Called with the Production version's tags on every check (monitoring figures).
        self.on_check = on_check
        self.last_error: str | None = None
        self.challenger_error: str | None = None  # why the challenger is not loaded
        self.last_check: dt.datetime | None = None
        self.on_swap = on_swap
        self.on_challenger = on_challenger
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
        """Check the registry once; load and swap in a new Production version (then the
        challenger). True if Production was swapped."""
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
        swapped = False
        if current is None or current.name != mv.name or current.version != str(mv.version):
            # Load beside the old one; requests keep using the old object until the assignment.
            challenger = self.challenger
            promoted = challenger is not None and challenger.version == str(mv.version)
            if challenger is not None and promoted:
                loaded = _with_threads(challenger, self.settings.batch_threads)
            else:
                loaded = load_version(self.settings, client, mv)
            self.current = loaded
            swapped = True
            log.info(
                "serving %s version %s (was %s)%s",
                loaded.name,
                loaded.version,
                current.version if current else "none",
                "; it was the challenger, already loaded" if promoted else "",
            )
            if self.on_swap:
                self.on_swap(loaded)
        self.last_error = None
        self._refresh_challenger(client)
        self._checked(mv)
        return swapped

    def _refresh_challenger(self, client) -> None:
        """Follow the challenger alias: load a new challenger, drop one whose alias is gone (or
        that became Production). A failure only sets ``challenger_error``."""
        old = self.challenger
        try:
            mv = resolve_challenger_version(self.settings, client)
            production = self.current
            if mv is None or (production is not None and str(mv.version) == production.version):
                new = None
            elif old is not None and old.version == str(mv.version):
                new = old
            else:
                # One thread for its large batches: the shadow never takes cores from Production.
                new = _with_threads(load_version(self.settings, client, mv), 1)
                _check_like_production(new, production)
            self.challenger_error = None
        except Exception as exc:  # Production serves on; the challenger is only reported
            self.challenger_error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("challenger not loaded: %s", self.challenger_error)
            new = None
        if new is old:
            return
        self.challenger = new
        log.info(
            "challenger of %s: %s (was %s)",
            self.settings.model_name,
            f"version {new.version}, scored in shadow" if new else "none",
            old.version if old else "none",
        )
        if self.on_challenger:
            self.on_challenger(new)

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


def _with_threads(model: LoadedModel, batch_threads: int) -> LoadedModel:
    from dataclasses import replace

    return replace(model, fast=model.fast.with_threads(batch_threads)) if model.fast is not None else model


def _check_like_production(challenger: LoadedModel, production: LoadedModel | None) -> None:
    """A challenger scores the rows Production was asked about: it must take the same feature
    columns (in any order). Raises RegistryError naming the difference."""
    from netsec_tasks.errors import RegistryError

    if production is None or set(challenger.features) == set(production.features):
        return
    extra = sorted(set(challenger.features) - set(production.features))
    lacking = sorted(set(production.features) - set(challenger.features))
    raise RegistryError(
        f"challenger {challenger.name} v{challenger.version} takes other features than Production "
        f"v{production.version} (challenger only: {extra[:5]}, Production only: {lacking[:5]}): "
        "it cannot score the rows Production is asked about"
    )
