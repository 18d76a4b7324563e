"""The readiness check's gather under a time limit (``serve.ingress.gather_within``), on a real event loop."""

from __future__ import annotations

import asyncio
import gc

import pytest

from serve.ingress import gather_within


async def _slow() -> bool:
    await asyncio.sleep(10)
    return True


async def _ready() -> bool:
    return True


def test_a_probe_that_stops_waiting_leaves_nothing_for_asyncio_to_log():
    """A readiness probe whose client disconnects cancels the route. Before, asyncio then logged
    "_GatheringFuture exception was never retrieved" with a traceback in the ingress replica's log."""

    async def main() -> list[str]:
        logged: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context["message"]))
        probe = asyncio.create_task(gather_within(5, _slow(), _slow()))
        await asyncio.sleep(0.05)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        await asyncio.sleep(0.05)
        gc.collect()  # the unretrieved exception is logged when the future is collected
        await asyncio.sleep(0.05)
        return logged

    assert asyncio.run(main()) == []


def test_answers_and_a_timeout_are_passed_on():
    assert asyncio.run(gather_within(5, _ready(), _ready())) == [True, True]
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(gather_within(0.05, _ready(), _slow()))
