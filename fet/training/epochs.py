"""A data-parallel rank's batches, epoch by epoch, reproducible and resumable at any batch.

``rows(epoch)`` yields lists of shard rows (this rank's share, e.g. from Ray Data's
``get_dataset_shard``). With ``cache=True`` the first pass decodes every row once into examples kept
in memory; each epoch is then a permutation seeded by (seed, epoch, rank), so batch ``b`` of epoch
``e`` is the same after a restart. Without the cache, each epoch streams the rows again (shuffled by
the reader with an epoch seed) and decodes them as it goes; the examples of each chunk of rows read (with
what is left of the chunk before) are mixed before they are cut into batches, so that a row's several
examples (stage 3's frame pairs of one clip) do not fill a batch. Resuming skips the batches already
trained on (streamed, their rows are read but not decoded); random choices inside a batch come from a
generator seeded by (seed, epoch, batch, rank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from fet.training.tasks.base import StageModel, TrainingTask

RowSource = Callable[[int], Iterator[list[dict[str, Any]]]]


class EpochBatches:
    def __init__(self, task: TrainingTask, rows: RowSource, batch_size: int, seed: int, rank: int, cache: bool) -> None:
        self.task, self.rows, self.batch_size = task, rows, batch_size
        self.seed, self.rank, self.cache = seed, rank, cache
        self.examples: list[Any] | None = None
        self.limit: int | None = None  # batches per epoch agreed by every rank (cache mode)

    def load(self) -> list[Any]:
        """Every example of this rank's share (one pass over the rows)."""
        if self.examples is None:
            self.examples = self._one_pass()
        return self.examples

    def _one_pass(self) -> list[Any]:
        return [e for chunk in self.rows(0) for e in self.task.examples(chunk)]

    def prepare(self, model: StageModel) -> None:
        """``task.prepare`` with this rank's examples, for a task that looks at them (``prepares``): the cached
        ones, or one streamed pass held for the call (stage 2's: a code and labels per face). Any other task
        reads nothing here: streamed from large shards, its first step waits for one batch, not for a pass
        over every row decoded and held in memory."""
        if not self.task.prepares:
            return
        self.task.prepare(model, self.load() if self.cache else self._one_pass())

    def batches_per_epoch(self) -> int | None:
        """Known up front only with the cache; the caller may lower it to the minimum over ranks."""
        return len(self.load()) // self.batch_size if self.cache else None

    def _rng(self, epoch: int, batch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, batch, self.rank])

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``skip, skip + 1, ...`` of ``epoch``; empty if the rank has less than one batch."""
        if self.cache:
            yield from self._cached(epoch, skip)
        else:
            yield from self._streamed(epoch, skip)

    def _cached(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        examples = self.load()
        n = len(examples) // self.batch_size
        if self.limit is not None:
            n = min(n, self.limit)
        order = np.random.default_rng([self.seed, epoch, self.rank, 7]).permutation(len(examples))
        for b in range(skip, n):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.task.collate([examples[i] for i in idx], self._rng(epoch, b))

    def _streamed(self, epoch: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        # the buffer holds (chunk, example) positions; a chunk's rows become examples (decoded, or encoded by
        # a frozen model in stage 2) only when a batch that is trained on draws one of them, so resuming far
        # into an epoch reads the rows of the skipped batches but does not decode them
        per_row = self.task.examples_per_row
        rows: dict[int, list[dict[str, Any]]] = {}  # chunks read, not yet made into examples
        made: dict[int, list[Any]] = {}  # chunks made into examples; each is let go of once drawn
        buffer: list[tuple[int, int]] = []
        b = 0
        for c, chunk in enumerate(self.rows(epoch)):
            rows[c] = chunk
            buffer += [(c, i) for i in range(len(chunk) * per_row)]
            # mixed, so that a batch is not the examples of one row (stage 3's frame pairs all of one clip)
            mix = np.random.default_rng([self.seed, epoch, self.rank, c, 11]).permutation(len(buffer))
            buffer = [buffer[i] for i in mix]
            while len(buffer) >= self.batch_size:
                batch, buffer = buffer[: self.batch_size], buffer[self.batch_size :]
                if b >= skip:
                    yield self.task.collate([self._draw(rows, made, k, i) for k, i in batch], self._rng(epoch, b))
                b += 1
            left = {k for k, _ in buffer}
            for done in [k for k in (*rows, *made) if k not in left]:
                rows.pop(done, None)
                made.pop(done, None)

    def _draw(self, rows: dict[int, list[dict[str, Any]]], made: dict[int, list[Any]], c: int, i: int) -> Any:
        """Example ``i`` of chunk ``c``, making the chunk's examples on its first draw."""
        if c not in made:
            chunk = rows.pop(c)
            made[c] = self.task.examples(chunk)
            if len(made[c]) != len(chunk) * self.task.examples_per_row:
                raise ValueError(f"{type(self.task).__name__}.examples made {len(made[c])} examples of "
                                 f"{len(chunk)} rows; expected examples_per_row ({self.task.examples_per_row}) "
                                 "per row")  # fmt: skip
        example, made[c][i] = made[c][i], None  # each position is drawn once
        return example
