"""The training data order, with its position in every checkpoint, so that a run resumes exactly mid-epoch.

`EpochShuffle` draws the order of an epoch from ``(seed, epoch)`` alone and gives each DDP rank its own share of
it. Its position — the epoch, the batches of it already trained, and the batches the epoch has — goes into every
checkpoint, and on resume the sampler skips the trained batches, so that the restarted epoch goes on with the batch
an uninterrupted run would have trained next.

- The position counts *trained* batches, not batches drawn from the loader (Lightning and DataLoader workers fetch
  ahead): `gensuite.callbacks.run_state.RunState` calls `mark_trained` after every training batch, and every
  checkpoint (epoch end, ``every_n_train_steps``, SIGTERM's ``interrupted.ckpt``) is written after that call.
- On resume, `RunState.on_load_checkpoint` hands the saved position to `resume_position` *before* the loader
  exists, and `train_order` builds the sampler at that position. This does not wait for Lightning's own stateful
  loader restore, which comes too late when the loader was created early (a family that reads
  ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` makes Lightning build and prefetch the
  loader before it restores its loops, and that restore is then skipped).
- `ResumableLoader` still implements Lightning's stateful-loader interface (``state_dict`` /
  ``load_state_dict``), so Lightning knows the loader resumes mid-epoch; its restore is the same position again.
- The sampler subclasses `DistributedSampler` so that Lightning does not wrap it in its own distributed sampler
  (which keeps no position): the rank split is done here, from the trainer's world size and rank.

A data module of one's own gets exact resume by building its training loader with ``ResumableLoader(ds,
batch_size=..., sampler=train_order(len(ds), seed, batch_size, self.trainer))``.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochShuffle(DistributedSampler):
    """A random order of ``range(n)`` that depends only on ``(seed, epoch)``; rank ``r`` of ``world`` takes every
    ``world``-th index of it from ``r`` (the order is cut to a multiple of ``world``, so ranks get equal shares).

    With torch's RandomSampler the order would come from the global RNG, whose state moves differently in a fresh
    and in a resumed run. ``__len__`` is the full share of an epoch even while a resumed epoch skips its first
    batches: Lightning counts the skipped batches as done and ends the epoch when the data ends.

    ``mirror=True`` (random horizontal flips): each index ``i`` comes as ``i + n`` with probability 1/2 — the
    dataset's mirrored item (`gensuite.data.images.TensorImages`). The coins are drawn from the same ``(seed,
    epoch)`` generator after the order, so the order is the same with or without flips, and a resumed epoch flips
    what the uninterrupted one would have.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        world: int = 1,
        rank: int = 0,
        batch_size: int = 1,
        epoch: int = 0,
        mirror: bool = False,
    ):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        # no super().__init__: it would ask for a dataset and a process group; the few attributes Lightning or
        # torch read from a DistributedSampler are set here
        self.n, self.seed, self.num_replicas, self.rank, self.batch_size = n, seed, world, rank, batch_size
        self.mirror = mirror
        self.epoch, self.shuffle, self.drop_last = epoch, True, True
        self.num_samples = n // world
        self.total_size = self.num_samples * world
        self._skip_epoch, self._skip = -1, 0  # the resumed epoch and its number of trained batches
        self._epoch_trained, self._batches = epoch, 0  # trained batches of the epoch being trained
        self._epoch_length = 0  # batches Lightning trains per epoch (limit_train_batches may cut the data)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch`` (all of them, without the resume skip)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=g)
        if self.mirror:  # a coin per position: i -> i + n, the mirrored item
            order = order + self.n * torch.randint(0, 2, (self.n,), generator=g)
        return order[: self.total_size][self.rank :: self.num_replicas].tolist()

    def __iter__(self):
        epoch = self.epoch
        # a resumed epoch skips what was trained before the checkpoint (until its first batch is trained here)
        skip = self._skip if epoch == self._skip_epoch else 0
        self._epoch_trained, self._batches = epoch, skip
        yield from self.order(epoch)[skip * self.batch_size :]

    def __len__(self) -> int:
        return self.num_samples

    # -- the position ------------------------------------------------------------------------------------------
    def trained(self, epoch_length: int = 0) -> None:
        """One more batch of the current epoch has been trained (called by `RunState` after each batch);
        ``epoch_length``: the batches Lightning trains per epoch."""
        if self._epoch_trained != self.epoch:
            self._epoch_trained, self._batches = self.epoch, 0
        self._batches += 1
        self._epoch_length = epoch_length
        self._skip_epoch = -1

    def state_dict(self) -> dict:
        batches = self._batches if self._epoch_trained == self.epoch else 0
        return {"epoch": self.epoch, "batches": batches, "epoch_length": self._epoch_length,
                "batch_size": self.batch_size, "world": self.num_replicas, "seed": self.seed, "n": self.n}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        same = all(state.get(k) == v for k, v in (("batch_size", self.batch_size), ("world", self.num_replicas),
                                                  ("seed", self.seed), ("n", self.n)))  # fmt: skip
        if not same:
            warnings.warn(
                f"resuming mid-epoch with another data layout than the checkpoint's ({state}): the rest of epoch "
                f"{state['epoch']} is drawn with the new one, so this run no longer matches an uninterrupted one",
                stacklevel=2,
            )
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches and batches >= int(state.get("epoch_length") or 0) > 0:
            epoch, batches = epoch + 1, 0  # saved after the last batch of an epoch: the next one starts whole
        # the epoch is set here too: DataLoader workers draw indices as soon as the iterator exists, which can be
        # before Lightning's set_epoch
        self.epoch = self._skip_epoch = self._epoch_trained = epoch
        skip = batches * int(state["batch_size"]) // self.batch_size
        self._skip = self._batches = min(skip, self.num_samples // max(1, self.batch_size))


class ResumableLoader(DataLoader):
    """A DataLoader whose position in the epoch is saved in checkpoints (its sampler's, an `EpochShuffle`)."""

    def state_dict(self) -> dict:
        return self.sampler.state_dict() if isinstance(self.sampler, EpochShuffle) else {}

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.sampler, EpochShuffle):
            self.sampler.load_state_dict(state)


_pending: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # trainer -> the position to resume at


def resume_position(trainer, state: dict | None) -> None:
    """Resume the next training loader built for ``trainer`` at ``state`` (an `EpochShuffle.state_dict`)."""
    if state:
        _pending[trainer] = state


def train_order(n: int, seed: int, batch_size: int, trainer=None, mirror: bool = False) -> EpochShuffle:
    """The training sampler for ``n`` items, split across the ranks of ``trainer`` (if any), at the position a
    resumed run was saved at; ``mirror``: with random mirrored items (`EpochShuffle`)."""
    if trainer is None:
        return EpochShuffle(n, seed, batch_size=batch_size, mirror=mirror)
    # the epoch Lightning is about to train: the sampler's order is right even if the loader's iterator (and the
    # DataLoader workers' first indices) is made before Lightning calls set_epoch
    epoch = trainer.fit_loop.epoch_progress.current.processed
    sampler = EpochShuffle(n, seed, world=trainer.world_size, rank=trainer.global_rank, batch_size=batch_size,
                           epoch=epoch, mirror=mirror)  # fmt: skip
    if trainer in _pending:  # once: a loader rebuilt later (reload_dataloaders_every_n_epochs) starts its epoch
        sampler.load_state_dict(_pending.pop(trainer))
    return sampler


def position(trainer) -> dict | None:
    """The position of the training loader of ``trainer`` (None if it has no `EpochShuffle`)."""
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    return sampler.state_dict() if isinstance(sampler, EpochShuffle) else None


def mark_trained(trainer) -> None:
    """Advance the position of the training loader of ``trainer`` by one batch (no-op for other samplers)."""
    sampler = getattr(trainer.train_dataloader, "sampler", None)
    if isinstance(sampler, EpochShuffle):
        length = trainer.num_training_batches
        sampler.trained(int(length) if length != float("inf") else 0)
