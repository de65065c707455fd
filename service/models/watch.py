"""The repository poll (``CONVSCOPE_REPOSITORY_POLL_SECONDS``): every so often, scan the
model repository and let the registry catch up with it (``ModelRegistry.sync``).

Exports write a version atomically (a hidden temporary directory, then one rename), so a
scan sees a version whole or not at all; a version copied in by other means may be seen
half-written, fails its checksum, is listed as failed, and is tried again once its files
stop changing. A repository root that is missing or unreadable is a storage problem (an
unmounted volume), not an instruction to unload everything: that round is skipped.
"""

from __future__ import annotations

import asyncio
import logging

from service.models.registry import ModelRegistry
from service.models.repository import ArtifactRef

log = logging.getLogger("convscope.repository")


def _scan(registry: ModelRegistry) -> list[ArtifactRef] | None:
    root = registry.root
    try:
        if not root.is_dir():
            log.warning("model repository %s is missing or not a directory: nothing changed", root)
            return None
        return registry.scan()
    except OSError as exc:
        log.warning("model repository %s cannot be read (%s): nothing changed", root, exc)
        return None


async def poll_once(registry: ModelRegistry) -> None:
    """One round: scan (on a thread), then sync the registry with what is there."""
    refs = await asyncio.to_thread(_scan, registry)
    if refs is not None:
        await registry.sync(refs)


async def watch(registry: ModelRegistry, interval: float) -> None:
    """Poll every ``interval`` seconds until cancelled. A round that fails is logged and the
    next one runs as planned: the poll never stops serving, nor itself."""
    log.info("polling the model repository %s every %g s", registry.root, interval)
    while True:
        await asyncio.sleep(interval)
        try:
            await poll_once(registry)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("polling the model repository failed; trying again in %g s", interval)
