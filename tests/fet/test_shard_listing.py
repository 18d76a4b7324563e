"""``shards.one_listing``: a driver's checks and reads of the shards list them once, and all see that listing."""

from __future__ import annotations

import threading

import pytest

from fet.data import shards
from tests.fet.helpers import count_listings


def _publish(out: str, *ids: str) -> None:
    rows = [{"source": "t", "item_id": i, "image_id": i, "split": "train", "input": f"{i}.png", "item_segments": 1,
             "reject_reason": "", "reject_detail": "", "image": b"x"} for i in ids]  # fmt: skip
    shards.write_shard(out, "images", rows)


@pytest.fixture
def listings(monkeypatch) -> list[tuple[str, str]]:
    return count_listings(monkeypatch)


def test_within_one_listing_the_shards_are_listed_once_and_a_shard_published_meanwhile_is_not_seen(tmp_path, listings):
    out = str(tmp_path / "shards")
    _publish(out, "a", "b")
    with shards.one_listing():
        assert shards.split_rows(out, "images", "train") == 2
        _publish(out, "c")  # after the driver's first look
        with shards.one_listing():  # nested: the outer listing holds
            assert len(shards.shard_files(out, "images")) == 1
        assert [r["image_id"] for r in shards.read_rows(out, "images", columns=["image_id"])] == ["a", "b"]
        assert shards.stored_row_bytes(out, "images", ["image"]) > 0
    assert listings == [(out, "images")]
    assert shards.split_rows(out, "images", "train") == 3  # outside: listed again, as each call always was
    assert shards.split_rows(out, "images", "train") == 3
    assert len(listings) == 3


def test_each_thread_has_its_own_listing(tmp_path, listings):
    """Two drivers' runs in two threads of one process (the demo's waves) do not share a listing."""
    out = str(tmp_path / "shards")
    _publish(out, "a")
    seen = {}

    def driver(name: str, ready: threading.Event, go: threading.Event) -> None:
        with shards.one_listing():
            seen[name] = [shards.split_rows(out, "images", "train")]
            ready.set()
            go.wait(10)
            seen[name].append(shards.split_rows(out, "images", "train"))

    first_ready, go = threading.Event(), threading.Event()
    first = threading.Thread(target=driver, args=("first", first_ready, go))
    first.start()
    first_ready.wait(10)
    _publish(out, "b")
    second_ready = threading.Event()
    second = threading.Thread(target=driver, args=("second", second_ready, go))
    second.start()
    second_ready.wait(10)
    go.set()
    first.join(10), second.join(10)
    assert seen == {"first": [1, 1], "second": [2, 2]}
    assert len(listings) == 2
