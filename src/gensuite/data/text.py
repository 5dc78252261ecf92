"""Text data modules: a UTF-8 text held as one byte tensor, served as windows of ``seq_len`` bytes.

Batches are ``(tokens, labels)``: ``tokens`` ``(B, seq_len)`` int64 byte ids in 0..255, ``labels`` ``(B,)`` all -1
(text has no classes). Training windows start at any byte (shuffled every epoch by ``(seed, epoch)``, so an epoch
is one window per start position and runs are budgeted in steps); validation windows tile the validation text
without overlap, so the validation NLL covers every validation byte once (the last partial window is left out).

The split into train and validation is deterministic and needs no seed. A text made of documents (`PydocText`: its
help topics) sends whole documents to validation, spread over the text and about ``val_fraction`` of its bytes, so
that the validation loss measures what a model does on topics it never saw: blocks cut through topics let a model
that memorises its topics look good, and a checkpoint chosen on them is the one that memorised most (1.38 bits/byte
on interleaved blocks against 1.83 on unseen topics, from one run). Any other text is cut into blocks of
``split_block`` bytes, and an evenly spaced ``val_fraction`` of them go to validation.

- `PydocText` (``data=pydoc``): the help topics that ship inside Python (``pydoc_data.topics``, ~466 kB): offline.
- `TextFile` (``data=text data.path=FILE``): any UTF-8 file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gensuite.contracts import DataInfo
from gensuite.data.images import as_batch
from gensuite.data.order import ResumableLoader, train_order
from gensuite.errors import ConfigError, DataError, require_positive


class ByteWindows(Dataset):
    """Windows of ``length`` bytes of ``data`` (uint8 ``(N,)``) starting every ``stride`` bytes; a batch is one
    fancy index into a strided view, not ``B`` item calls."""

    def __init__(self, data: torch.Tensor, length: int, stride: int):
        assert data.dtype == torch.uint8 and data.dim() == 1 and len(data) >= length, (data.dtype, data.shape)
        self.data, self.length, self.stride = data, length, stride
        self.windows = data.unfold(0, length, stride)  # (n_windows, length) view

    def __len__(self) -> int:
        return self.windows.shape[0]

    def __getitem__(self, i: int):
        return self.windows[i].long(), torch.tensor(-1)

    def __getitems__(self, idx: Sequence[int]):
        index = torch.as_tensor(idx)
        return self.windows[index].long(), torch.full((len(index),), -1, dtype=torch.long)


def split_documents(lengths: Sequence[int], val_fraction: float) -> tuple[list[slice], list[slice]]:
    """Whole documents of ``lengths`` bytes (laid end to end) to train or validation: a document goes to
    validation when that keeps the validation bytes so far nearest ``val_fraction`` of the bytes so far, which
    spreads the validation documents over the text at about ``val_fraction`` of its bytes."""
    train, val, start, held = [], [], 0, 0
    for length in lengths:
        piece = slice(start, start + length)
        start += length
        if abs(held + length - val_fraction * start) < abs(held - val_fraction * start):
            val.append(piece)
            held += length
        else:
            train.append(piece)
    return train, val


def split_blocks(n: int, val_fraction: float, split_block: int) -> tuple[list[slice], list[slice]]:
    """Cut ``n`` bytes into blocks and send an evenly spaced ``val_fraction`` of them to validation.

    Blocks are ``split_block`` bytes, smaller for short texts so that there are at least 20; block ``i`` is a
    validation block when ``floor((i + 1) f)`` exceeds ``floor(i f)``.
    """
    size = max(1, min(split_block, n // 20))
    blocks = [slice(s, min(s + size, n)) for s in range(0, n, size)]
    train, val = [], []
    for i, b in enumerate(blocks):
        (val if int((i + 1) * val_fraction) > int(i * val_fraction) else train).append(b)
    return train, val


class TextDataModule(L.LightningDataModule):
    """Base of the text data modules: subclasses implement `load_bytes`.

    Args:
        name: the data's name (run names, messages).
        seq_len: bytes per window (the transformer's context reads it: ``model.context: ${data.seq_len}``).
        batch_size, eval_batch_size: windows per training / validation batch.
        val_fraction: share of the blocks that go to validation.
        split_block: block size of the train / validation split, bytes.
        modality: ``text`` (the data config states it, so model configs can read ``${data.modality}``).
        num_workers: loader workers (0: the windows are cut in the main process, which is fast).
    """

    modality = "text"

    def __init__(
        self,
        name: str = "text",
        seq_len: int = 256,
        batch_size: int = 64,
        eval_batch_size: int = 64,
        val_fraction: float = 0.1,
        split_block: int = 4096,
        modality: str = "text",
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        require_positive(seq_len=seq_len, batch_size=batch_size, eval_batch_size=eval_batch_size)
        require_positive(split_block=split_block)
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}", keys=("val_fraction",))
        if modality != "text":
            raise ConfigError(f"a text data module has modality=text, got {modality!r}", keys=("modality",))
        self.name, self.seq_len = name, seq_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_fraction, self.split_block, self.num_workers = val_fraction, split_block, num_workers
        self.seed = seed  # the order of the training windows (the split needs none)
        self.train: ByteWindows | None = None
        self.val: ByteWindows | None = None
        self.train_bytes = self.val_bytes = 0
        self.val_unit = ""

    def load_bytes(self) -> bytes:
        raise NotImplementedError

    def document_lengths(self, raw: bytes) -> list[int] | None:
        """The byte lengths of the documents ``raw`` is made of, end to end (None: not documents; blocks)."""
        return None

    def info(self) -> DataInfo:
        """What this data module declares to models and the evaluation (`gensuite.contracts.DataInfo`)."""
        return DataInfo(name=self.name, modality="text", seq_len=self.seq_len, held_out="val")

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        raw = self.load_bytes()
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        lengths = self.document_lengths(raw)
        if lengths is None:
            train_blocks, val_blocks = split_blocks(len(data), self.val_fraction, self.split_block)
        else:
            assert sum(lengths) == len(raw), "document_lengths must cover the text exactly"
            train_blocks, val_blocks = split_documents(lengths, self.val_fraction)
        self.val_unit = "whole documents never trained on" if lengths else "blocks spread over the text"
        train = torch.cat([data[b] for b in train_blocks]) if train_blocks else data[:0]
        val = torch.cat([data[b] for b in val_blocks]) if val_blocks else data[:0]
        if len(train) < self.seq_len + self.batch_size or len(val) < self.seq_len:
            raise DataError(
                f"data={self.name}: {len(raw)} bytes give {len(train)} training and {len(val)} validation bytes, "
                f"too few for windows of data.seq_len={self.seq_len} bytes",
                fix=f"use a longer text, or shorter windows: data.seq_len={max(8, len(val) // 2)} "
                f"model.context={max(8, len(val) // 2)}",
            )
        self.train_bytes, self.val_bytes = len(train), len(val)
        self.train = ByteWindows(train, self.seq_len, stride=1)
        self.val = ByteWindows(val, self.seq_len, stride=self.seq_len)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val, self.eval_batch_size, train=False)

    def _loader(self, ds: Dataset, batch_size: int, train: bool) -> DataLoader:
        return (ResumableLoader if train else DataLoader)(
            ds,
            batch_size=batch_size,
            # the order depends on (seed, epoch) only, and its position is saved in checkpoints (gensuite.data.order)
            sampler=train_order(len(ds), self.seed, batch_size, self.trainer) if train else None,
            # a private generator: creating the iterator then draws no seed from the global RNG (dropout)
            generator=torch.Generator().manual_seed(self.seed),
            drop_last=train,
            collate_fn=as_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def describe(self) -> str:
        self.setup()
        return (
            f"{self.name}: {self.train_bytes:,} train / {self.val_bytes:,} val bytes (UTF-8), "
            f"windows of {self.seq_len} bytes ({len(self.val)} validation windows; {self.val_unit})"
        )

    def text(self, split: str = "val") -> str:
        """The split's text (for prompts, inspection and tests)."""
        self.setup()
        ds = self.train if split == "train" else self.val
        return bytes(ds.data.tolist()).decode("utf-8", errors="replace")


def _check_text(raw: bytes, where: str) -> None:
    """Empty, binary or non-UTF-8 data stops with a message naming the place."""
    if not raw:
        raise DataError(f"{where} is empty", fix="point data.path at a UTF-8 text file with some text in it")
    nul = raw.find(b"\x00", 0, 1_000_000)
    if nul >= 0:
        raise DataError(
            f"{where} looks binary (it holds a NUL byte at offset {nul})",
            fix="point data.path at a UTF-8 text file",
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{where} is not UTF-8 text: byte {err.start} ({raw[err.start : err.start + 1]!r}) is invalid",
            fix="convert it (iconv -f <encoding> -t utf-8 FILE > FILE.utf8) and point data.path at the result",
        ) from None


class PydocText(TextDataModule):
    """Python's own help topics (``pydoc_data.topics``, the text ``help('topics')`` shows): ~466 kB of English
    prose and code, shipped inside every CPython. Topics are joined in sorted order, one blank line between;
    validation holds whole topics (`split_documents`)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("name", "pydoc")
        super().__init__(**kwargs)

    def document_lengths(self, raw: bytes) -> list[int]:
        lengths = [len(t.encode("utf-8")) + 2 for t in self.topics()]  # each topic and the blank line after it
        lengths[-1] -= 1  # the last topic ends with one newline, not a blank line
        return lengths

    def topics(self) -> list[str]:
        """The help topics in sorted order (as joined into the text)."""
        try:
            from pydoc_data.topics import topics
        except ImportError as err:  # some distributions split it into a separate package
            raise DataError(
                "data=pydoc: this Python has no pydoc_data module (some Linux distributions ship it separately)",
                fix="install your distribution's python3 doc package, or use data=text data.path=<file>",
            ) from err
        return [topics[k].strip("\n") for k in sorted(topics)]

    def load_bytes(self) -> bytes:
        return ("\n\n".join(self.topics()) + "\n").encode("utf-8")


class TextFile(TextDataModule):
    """Any UTF-8 text file: ``data=text data.path=FILE``."""

    def __init__(self, path: str | None = None, **kwargs):
        kwargs.setdefault("name", "text")
        super().__init__(**kwargs)
        if not path:
            raise ConfigError("data=text needs a file", keys=("path",), fix="add data.path=/path/to/file.txt")
        self.path = Path(os.path.expanduser(str(path)))

    def load_bytes(self) -> bytes:
        where = f"data.path={self.path}"
        if self.path.is_dir():
            raise DataError(f"{where} is a folder, not a file", fix="point data.path at a UTF-8 text file")
        if not self.path.is_file():
            raise DataError(f"{where}: no such file", fix="check the path (relative paths start at the cwd)")
        raw = self.path.read_bytes()
        _check_text(raw, where)
        return raw
