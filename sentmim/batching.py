"""Padded batches of sentences of similar length, in an order fixed by (seed, epoch).

    loader = make_dataloader(tokenized["train"], batch_size=32, pad_token_id=tokenizer.pad_token_id,
                             shuffle=True, seed=0)

Batches group sentences of similar length (`LengthBucketSampler`), which wastes far less compute on padding than
random batches. The order depends only on (seed, epoch), so an interrupted run resumes with the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset, IterableDataset

from .data import DataError
from .preprocessing import column_as_array


class LengthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices whose sentences have similar lengths, in an order fixed by (seed, epoch).

    With shuffle, the indices are permuted, cut into chunks of `chunk_batches * batch_size`, each chunk is sorted by
    length and cut into batches, and the batch order is shuffled. Large chunks give batches of nearly equal length,
    while the permutation keeps batches random across epochs. `chunk_batches=1` gives plain random batches. Without
    shuffle, the chunks are taken in dataset order and batches come in order (for evaluation).

    Pass it as `batch_sampler=` to a DataLoader and call `set_epoch(epoch)` before each epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        chunk_batches: int = 100,
    ):
        if batch_size < 1 or chunk_batches < 1:
            raise DataError(f"batch_size and chunk_batches must be >= 1, got {batch_size} and {chunk_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.chunk_size = chunk_batches * batch_size  # a multiple of batch_size: only the last batch can be short
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size if self.drop_last else -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            batches += [chunk[batch] for batch in sorted_batches(self.lengths[chunk], self.batch_size)]
        if batches and self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from (batch.tolist() for batch in batches)


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The positions of `lengths` sorted by length (stably) and cut into batches."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate_batch(examples: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad "input_ids" on the right to the longest example; attention_mask is 1 on tokens, 0 on padding."""
    sequences = [_as_list(example["input_ids"]) for example in examples]
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    mask = np.arange(lengths.max()) < lengths[:, None]
    input_ids = np.full(mask.shape, pad_token_id, dtype=np.int64)
    # One copy of all tokens, row after row, into the positions the mask marks (numpy fills them in row order).
    input_ids[mask] = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def _as_list(sequence) -> list | tuple:
    return sequence if isinstance(sequence, list | tuple) else sequence.tolist()  # a tensor or an array


@dataclasses.dataclass(eq=False)
class _BucketedStream(torch.utils.data.IterableDataset):
    """Length bucketing for streams: read a window of examples, sort it by length, yield its batches shuffled.

    Only one window is held at a time, so memory stays flat however large the stream is.
    """

    dataset: IterableDataset
    batch_size: int
    shuffle: bool
    seed: int
    window: int
    collate: Callable[[Sequence[dict]], dict]
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        source = self.dataset
        if self.shuffle:
            source = _shuffle_stream(source, self.seed, self.window)  # shuffles shards and examples
            source.set_epoch(self.epoch)
        buffer: list[list[int]] = []
        for example in source:
            buffer.append(example["input_ids"])
            if len(buffer) == self.window:
                yield from self._batches(buffer, rng)
                buffer = []
        if buffer:
            yield from self._batches(buffer, rng)

    def _batches(self, buffer: list, rng: np.random.Generator) -> Iterator[dict[str, torch.Tensor]]:
        batches = sorted_batches(np.array([len(ids) for ids in buffer]), self.batch_size)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches:
            yield self.collate([{"input_ids": buffer[i]} for i in batch])


def _shuffle_stream(stream: IterableDataset, seed: int, buffer_size: int) -> IterableDataset:
    """`stream.shuffle`, reading a single shard without datasets' shard interleaving.

    The interleaving hands every example over between threads, which took more than half the time of iterating a
    one-file stream; with one shard there is nothing to interleave.
    """
    options = {}
    if stream.num_shards == 1 and "max_buffer_input_shards" in inspect.signature(stream.shuffle).parameters:
        options["max_buffer_input_shards"] = 1  # datasets >= 5
    return stream.shuffle(seed=seed, buffer_size=buffer_size, **options)


def make_dataloader(
    tokenized_ds: Dataset | IterableDataset,
    batch_size: int,
    pad_token_id: int,
    shuffle: bool = True,
    seed: int = 0,
    bucket: bool = True,
    bucket_batches: int = 100,
) -> torch.utils.data.DataLoader:
    """A DataLoader of padded batches {"input_ids", "attention_mask"} over a tokenized split.

    In memory, batches come from a `LengthBucketSampler` (reach it as `loader.batch_sampler`). For a stream,
    length bucketing works over a window of `bucket_batches * batch_size` examples (reach it as `loader.dataset`).
    Either way, call `set_epoch(epoch)` on that object before each epoch (accelerate's prepared loader does it
    for you on one process); `bucket=False` gives random batches with the same (seed, epoch) determinism.
    """
    collate = functools.partial(collate_batch, pad_token_id=pad_token_id)
    window_batches = bucket_batches if bucket else 1
    if isinstance(tokenized_ds, IterableDataset):
        stream = _BucketedStream(tokenized_ds, batch_size, shuffle, seed, window_batches * batch_size, collate)
        return torch.utils.data.DataLoader(stream, batch_size=None)
    if "length" in tokenized_ds.column_names:
        lengths = column_as_array(tokenized_ds, "length")
    else:
        lengths = [len(ids) for ids in tokenized_ds["input_ids"][:]]
    tokenized_ds = tokenized_ds.select_columns(["input_ids"])  # do not read columns we do not batch
    sampler = LengthBucketSampler(lengths, batch_size, shuffle, seed, chunk_batches=window_batches)
    return torch.utils.data.DataLoader(tokenized_ds, batch_sampler=sampler, collate_fn=collate)
