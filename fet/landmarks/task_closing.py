"""Closing MediaPipe tasks when their owner goes, without a deadlock and without errors at exit.

Every MediaPipe call goes through ``ThreadPoolExecutor.submit``, which allocates while it holds the lock
that ``concurrent.futures`` shares between all executors. An allocation can start a collection of
reference cycles, and a finalizer that the collection runs there and closes a task calls ``submit``
again in the same thread: it waits for that lock for ever. So a task whose owner the cycle collector
frees is closed later, at the next ``close_deferred()`` (every new or closed detector calls it).

At exit the executors are shut down before ``atexit`` handlers run, after which no task can be closed;
tasks still open are closed just before that, by a hook on the interpreter's thread shutdown.
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

_collecting = False  # a collection of reference cycles is under way (set by ``_on_collection``)
_deferred: list[Any] = []  # tasks whose owner a collection freed: closed by ``close_deferred``
_open: dict[int, weakref.finalize] = {}  # id of each task still open → its finalizer
_installed = False


def _on_collection(phase: str, info: dict) -> None:
    global _collecting
    _collecting = phase == "start"


def _close(task: Any) -> None:
    _open.pop(id(task), None)
    if _collecting:
        _deferred.append(task)  # keeps it alive: its own ``__del__`` would close it here too
    else:
        task.close()


def close_deferred() -> None:
    """Close the tasks whose owner a collection freed."""
    while _deferred:
        _deferred.pop().close()


def _close_all() -> None:
    for finalizer in list(_open.values()):
        finalizer()
    close_deferred()


def close_with(owner: object, task: Any) -> weakref.finalize:
    """Close ``task`` when ``owner`` is freed (as above) or at exit → the finalizer, which closes it when
    called. Call it after MediaPipe is imported, so that the exit hook runs before the executors' own."""
    global _installed
    if not _installed:
        gc.callbacks.append(_on_collection)
        threading._register_atexit(_close_all)  # the hook concurrent.futures uses; run last in, first out
        _installed = True
    finalizer = weakref.finalize(owner, _close, task)
    finalizer.atexit = False  # closed by ``_close_all`` at thread shutdown, when it still can be
    _open[id(task)] = finalizer
    return finalizer
