"""Tokenizers: data -> token ids ``(B, L)`` int64 and back. The swappable part of the autoregressive family.

- `ByteTokenizer` (``bytes``): UTF-8 bytes, vocabulary 256. Text data modules already yield byte ids, so encoding
  a batch is the identity; ``decode`` gives strings.
- `PixelTokenizer` (``pixels``): ImageGPT-like (Chen et al. 2020). Every 8-bit sub-pixel is one token, quantised
  to ``levels`` intensity levels, in raster order (row by row, the channels of a pixel next to each other).
- `VQTokenizer` (``vq``): the code grid of a trained VQ-VAE (van den Oord et al. 2017), raster order.

Every tokenizer tells the family how to turn the exact NLL of its tokens into an NLL of the data as stored
(`dequantisation_nats`): bytes are the data (0 nats); a pixel token stands for a bin of 8-bit values, and spreading
its probability evenly over them gives a proper distribution over 8-bit images (``log |bin|`` nats per sub-pixel,
0 with 256 levels). VQ codes are no invertible function of the pixels, so `VQTokenizer` has no data likelihood.
"""

from __future__ import annotations

import torch
from torch import nn

from gensuite.errors import ConfigError, require_positive


class ByteTokenizer(nn.Module):
    """UTF-8 bytes: ids 0..255. ``encode`` takes the byte ids text data modules yield ``(B, T)``.

    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode_text("héllo")[None])
    ['héllo']
    """

    modality = "text"
    vocab_size = 256
    seq_len = None  # any length: the data's windows
    data_likelihood = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(x):
            raise ValueError(
                "the bytes tokenizer reads byte ids from a text data module, but got a float (image) batch: "
                "use model/tokenizer=pixels or model/tokenizer=vq for images"
            )
        return x.long()

    def encode_text(self, text: str) -> torch.Tensor:
        """A string -> its UTF-8 byte ids ``(L,)`` int64."""
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """``(B, L)`` ids -> B strings (bytes that do not form valid UTF-8 become U+FFFD)."""
        return [bytes(row.tolist()).decode("utf-8", errors="replace") for row in tokens.to(torch.uint8).cpu()]

    def characters(self, tokens: torch.Tensor) -> torch.Tensor:
        """Characters per row ``(B,)``: the bytes that start a UTF-8 character (not ``0b10xxxxxx``)."""
        return ((tokens & 0xC0) != 0x80).sum(1)

    def dequantisation_nats(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0], device=tokens.device)


class PixelTokenizer(nn.Module):
    """8-bit images quantised to ``levels`` levels, one token per sub-pixel, raster order.

    Level ``k`` holds the 8-bit values ``v`` with ``floor(v * levels / 256) == k`` and decodes to their mean, so
    with 256 levels the round trip is exact and with fewer it is within half a bin.

    Args:
        channels, image_size: the images (from the data config).
        levels: intensity levels, 2..256 (the vocabulary size).

    Input ``(B, C, H, W)`` float in [0, 1]; tokens ``(B, H*W*C)`` int64; decoded images float in [0, 1].

    >>> tok = PixelTokenizer(channels=1, image_size=2, levels=256)
    >>> x = torch.tensor([[[[0.0, 1.0], [128 / 255, 7 / 255]]]])
    >>> tok.encode(x).tolist(), torch.equal(tok.decode(tok.encode(x)), x)
    ([[0, 255, 128, 7]], True)
    """

    modality = "image"
    data_likelihood = True

    def __init__(self, channels: int, image_size: int, levels: int = 256):
        super().__init__()
        require_positive(channels=channels, image_size=image_size)
        if not 2 <= levels <= 256:
            raise ConfigError(f"levels must be in 2..256, got {levels}", keys=("levels",), fix="levels=256")
        self.channels, self.image_size, self.levels = channels, image_size, levels
        self.vocab_size = levels
        self.seq_len = channels * image_size * image_size
        level_of = torch.arange(256) * levels // 256  # 8-bit value -> level
        sizes = torch.bincount(level_of, minlength=levels).float()
        centres = torch.zeros(levels).index_add_(0, level_of, torch.arange(256).float()) / sizes
        # derived from `levels`: not saved in checkpoints
        self.register_buffer("level_of", level_of, persistent=False)
        self.register_buffer("centres", centres / 255, persistent=False)
        self.register_buffer("log_sizes", sizes.log(), persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"the pixels tokenizer was built for images (B, {self.channels}, {self.image_size}, "
                f"{self.image_size}) but got {tuple(x.shape)}"
            )
        v = (x.float() * 255).round().clamp(0, 255).long()
        tokens = self.level_of[v]
        return tokens.permute(0, 2, 3, 1).flatten(1)  # (B, C, H, W) -> (B, H, W, C) -> (B, H*W*C)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        s, c = self.image_size, self.channels
        x = self.centres[tokens.long()].view(-1, s, s, c)  # (B, H*W*C) -> (B, H, W, C)
        return x.permute(0, 3, 1, 2).contiguous()

    def dequantisation_nats(self, tokens: torch.Tensor) -> torch.Tensor:
        """``sum log |bin|`` per image ``(B,)``: added to the token NLL it gives the NLL of the 8-bit image under
        'uniform within each level' (exactly 0 with 256 levels)."""
        return self.log_sizes[tokens].sum(1)


class VQTokenizer(nn.Module):
    """The code grid of a trained VQ-VAE (``model=vqvae``), loaded from its checkpoint, frozen.

    Tokens ``(B, h*w)`` in raster order, vocabulary = the codebook size; ``decode`` maps codes through the codebook
    and the VQ-VAE's decoder to images in [0, 1]. Its weights are part of the transformer's checkpoint, but the
    checkpoint path must still exist to rebuild the model (its config names it).

    The part takes the frozen VQ-VAE itself (a part never loads a family); ``model/tokenizer=vq`` builds it with
    `gensuite.runs.checkpoint.vq_tokenizer`, which loads the checkpoint ``path`` through
    `gensuite.runs.checkpoint.load_frozen`.

    Args:
        autoencoder: a trained VQ-VAE (``encode_codes``, ``decode_codes``, ``num_codes``, ``grid_size``,
            ``image_shape``), frozen here.
        path: where it came from (recorded for messages), or None.
    """

    modality = "image"
    data_likelihood = False  # codes are not an invertible function of the pixels

    def __init__(self, autoencoder: nn.Module, path: str | None = None):
        super().__init__()
        missing = [a for a in ("encode_codes", "decode_codes", "num_codes", "grid_size", "image_shape")
                   if not hasattr(autoencoder, a)]  # fmt: skip
        if missing:
            raise ConfigError(
                f"the VQ tokenizer needs a VQ-VAE, but {type(autoencoder).__name__} has no {', '.join(missing)}",
                keys=("path",),
                fix="model.tokenizer.path=<the last.ckpt of a `model=vqvae` run>",
            )
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.path = None if path is None else str(path)
        self.vocab_size = autoencoder.num_codes
        self.grid_size = autoencoder.grid_size
        self.seq_len = self.grid_size * self.grid_size
        self.image_shape = autoencoder.image_shape

    def train(self, mode: bool = True) -> VQTokenizer:
        # frozen: batch-norm statistics and the codebook stay as trained, whatever the family's mode
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode_codes(x).flatten(1)  # (B, h, w) -> (B, h*w)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        codes = tokens.long().view(-1, self.grid_size, self.grid_size)  # (B, h*w) -> (B, h, w)
        return self.autoencoder.decode_codes(codes)

    def dequantisation_nats(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("VQ codes give no likelihood of the pixels")


def for_data(modality: str = "image", channels: int = 1, image_size: int = 1, levels: int = 256) -> nn.Module:
    """The tokenizer a modality reads by default (``model/tokenizer=auto``): `ByteTokenizer` for ``text``,
    `PixelTokenizer` (``channels``, ``image_size``, ``levels``) for ``image``.

    Hydra cannot let the data choose a group default of the model, so the choice happens here, on the data
    config's ``modality`` (image configs leave it out: ``${oc.select:data.modality,image}``).
    """
    makers = {
        "text": lambda: ByteTokenizer(),
        "image": lambda: PixelTokenizer(channels=channels, image_size=image_size, levels=levels),
    }
    if modality not in makers:
        raise ConfigError(
            f"no default tokenizer for modality={modality!r} (known: {tuple(makers)})",
            keys=("modality",),
            fix="name one: model/tokenizer=bytes | pixels | vq",
        )
    return makers[modality]()
