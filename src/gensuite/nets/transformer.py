"""Decoder-only transformer (GPT-style): tokens ``(B, T)`` -> next-token logits ``(B, T, V)``.

Pre-norm blocks (Xiong et al. 2020, "On layer normalization in the transformer architecture"): ``x + attn(ln(x))``
then ``x + mlp(ln(x))``, causal self-attention through ``torch.nn.functional.scaled_dot_product_attention``,
rotary (Su et al. 2021, RoFormer) or learned absolute positions, optional tying of the output layer to the token
embedding (Press & Wolf 2017), GPT-2 initialisation (Radford et al. 2019: N(0, 0.02), residual projections scaled
by 1/sqrt(2 * depth)).

The vocabulary has one extra *input* token, ``bos = vocab_size``, that starts every sequence; the output layer
predicts only the ``vocab_size`` real tokens. Training on ``[bos, x_0 .. x_{T-2}] -> [x_0 .. x_{T-1}]`` makes the
summed cross-entropy the exact negative log-likelihood of all ``T`` tokens.

Class-conditional (``num_classes`` = K > 0): K more input tokens, ``vocab_size + 1 + c`` for class c, and a
sequence of class c starts with its class token instead of ``bos``: ``[cls_c, x_0 .. x_{T-2}] -> [x_0 .. x_{T-1}]``.
The class token is only ever read, never a target, so the loss is ``-log p(x | c)``; the context, the key/value
cache and the sliding windows are unchanged (a window starts with the class token where it would start with
``bos``).

Sampling (`Transformer.generate`) keeps a key/value cache (`KVCache`) so each new token costs one position, not a
full forward pass. Sequences longer than the context are generated in sliding windows that always start with
``bos`` (`window_start`); the cached and the uncached paths follow the same windows, so for a fixed generator they
return the same tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gensuite.errors import ConfigError, require_positive

POSITIONS = ("rope", "learned")


class KVCache:
    """Keys and values of the positions seen so far, per layer: ``(B, heads, context, head_dim)`` each.

    ``length`` is how many positions are filled. `Transformer.forward` writes the new positions and advances it.
    """

    def __init__(self, depth: int, batch: int, heads: int, context: int, head_dim: int, device, dtype):
        shape = (batch, heads, context, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.context = context
        self.length = 0

    def reset(self) -> None:
        self.length = 0


def rope_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables ``(context, head_dim)``: ``cos`` of the angles ``pos * base^(-2i/head_dim)`` for both halves of
    the channels, and ``sin`` with the sign of the rotation folded in (``-sin`` on the first half)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(context, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (context, head_dim / 2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], 1).float(), torch.cat([-sin, sin], 1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x_i, x_{i + d/2})`` of ``x`` ``(..., T, d)`` by the angles of its positions
    (tables `rope_tables` sliced to ``(T, d)``, broadcast over the leading dims). Attention scores of rotated q and
    k depend only on relative position. Few ops on purpose: sampling runs it once per token and layer, and on a GPU a
    step of a small GPT is bound by kernel launches. In ``x``'s dtype (bf16 under autocast, as most GPT code does):
    computing in float32 and casting back cost the bf16 GPT step 4 extra kernels per layer."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([x2, x1], dim=-1) * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional key/value cache."""

    def __init__(self, width: int, heads: int, dropout: float, attn_dropout: float, bias: bool):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.proj.residual = True  # scaled init (GPT-2)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        b, t, c = x.shape
        start = cache.length if cache is not None else 0
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).transpose(1, 3)  # (B, heads, 3, T, head_dim)
        v = qkv[:, :, 2]  # (B, heads, T, head_dim), as q and k
        qk = qkv[:, :, :2]
        if rope is not None:  # q and k rotated in one call
            qk = apply_rope(qk, rope[0][start : start + t], rope[1][start : start + t])
        q, k = qk.unbind(2)
        mask, causal = None, True
        if cache is not None:
            cache.k[layer][:, :, start : start + t] = k
            cache.v[layer][:, :, start : start + t] = v
            k, v = cache.k[layer][:, :, : start + t], cache.v[layer][:, :, : start + t]
            if start > 0:
                # new queries sit at positions start..start+t-1 and see every key up to their own position;
                # SDPA's is_causal aligns the mask top-left, which is wrong once the cache holds a prefix
                causal = False
                if t > 1:
                    mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(start)
        drop = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal and t > 1)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, heads, T, head_dim) -> (B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, dropout: float, bias: bool):
        super().__init__()
        hidden = int(mlp_ratio * width)
        self.fc = nn.Linear(width, hidden, bias=bias)
        self.proj = nn.Linear(hidden, width, bias=bias)
        self.proj.residual = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, attn_dropout: float, bias: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, bias=bias)
        self.attn = CausalSelfAttention(width, heads, dropout, attn_dropout, bias)
        self.ln2 = nn.LayerNorm(width, bias=bias)
        self.mlp = MLP(width, mlp_ratio, dropout, bias)

    def forward(self, x, rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, cache, layer)
        return x + self.mlp(self.ln2(x))


def window_start(j: int, context: int, keep: int) -> int:
    """First generated token of the window that predicts generated token ``j`` (0-based, ``bos`` not counted).

    A window is ``[bos] + tokens[s:j]`` and holds at most ``context`` positions. While ``j < context`` it is the
    whole prefix (s = 0). When it is full, it restarts from the last ``keep`` tokens, grows again to ``context``,
    and so on: every ``context - keep`` tokens one re-encoding, instead of one per token.
    """
    if j < context:
        return 0
    return j - keep - (j - context) % (context - keep)


def sample_from_logits(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)``: ``(B,)`` int64.

    ``temperature`` divides the logits (0: greedy); ``top_k`` keeps the k most likely tokens; ``top_p`` keeps the
    smallest set of most likely tokens whose probability reaches p (nucleus sampling, Holtzman et al. 2020).
    The draw is an inverse-CDF lookup of one uniform number per row, so it consumes exactly ``B`` numbers from
    ``generator`` whatever the distribution — the cached and uncached samplers stay in step.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # drop a token when the tokens more likely than it already reach top_p (the most likely always stays)
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_max(probs.shape[-1] - 1).squeeze(1)


class Transformer(nn.Module):
    """GPT-style decoder-only transformer.

    Args:
        vocab_size: real tokens ``0 .. vocab_size-1`` (the family passes its tokenizer's); ``bos = vocab_size``.
        context: the most positions one forward pass sees (``bos`` included).
        width, depth, heads: model width, number of blocks, attention heads (``width % heads == 0``).
        mlp_ratio: hidden units of the MLP per unit of width.
        dropout: on residual branches and embeddings (training only).
        attn_dropout: on attention weights. Off by default: on CPU it draws a (B, heads, T, T) mask and forces
            the slow attention path.
        positions: ``rope`` (rotary; no parameters) or ``learned`` (an embedding per position).
        tie_weights: the output layer reuses the token embedding matrix.
        bias: biases in the linear layers and layer norms.
        num_classes: K > 0 adds K class tokens (`start_tokens`) that start the sequences of a conditional model.

    Input ``(B, T)`` int64 in ``[0, vocab_size + num_classes]``, ``T <= context``; output ``(B, T, vocab_size)``
    float logits.

    >>> net = Transformer(vocab_size=10, context=16, width=32, depth=2, heads=2)
    >>> net(torch.zeros(3, 5, dtype=torch.long)).shape
    torch.Size([3, 5, 10])
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        positions: str = "rope",
        tie_weights: bool = True,
        bias: bool = False,
        num_classes: int = 0,
    ):
        super().__init__()
        if num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {num_classes}", keys=("num_classes",))
        require_positive(vocab_size=vocab_size, context=context, width=width, depth=depth, heads=heads)
        if width % heads != 0 or (width // heads) % 2 != 0:
            raise ConfigError(
                f"width={width} must split into heads={heads} heads of an even size (rotary pairs channels)",
                keys=("width", "heads"),
                fix="choose width divisible by 2*heads (e.g. width=256 heads=4)",
            )
        if positions not in POSITIONS:
            raise ConfigError(f"positions must be one of {POSITIONS}, got {positions!r}", keys=("positions",))
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if not 0 <= p < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {p}", keys=(name,))
        self.vocab_size, self.context, self.width, self.depth, self.heads = vocab_size, context, width, depth, heads
        self.bos = vocab_size
        self.num_classes = num_classes
        self.positions = positions
        self.tok_emb = nn.Embedding(vocab_size + 1 + num_classes, width)  # real tokens, bos, class tokens
        self.pos_emb = nn.Embedding(context, width) if positions == "learned" else None
        if positions == "rope":
            cos, sin = rope_tables(context, width // heads)
            # derived from sizes: not saved (a checkpoint holds only learned weights)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout, attn_dropout, bias) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width, bias=bias)
        self.head = None if tie_weights else nn.Linear(width, vocab_size, bias=False)
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.depth) if getattr(module, "residual", False) else 0.02
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups: weight decay on the matrices of linear layers only; none on embeddings (the tied
        output layer included), layer norms and biases, which decay would only pull towards zero."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def start_tokens(self, n: int, labels: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """``(n, 1)`` int64: the token each sequence starts with: ``bos``, or the class token of ``labels`` ``(n,)``."""
        device = device or self.tok_emb.weight.device
        if labels is None:
            if self.num_classes:
                raise ValueError("this transformer was built with num_classes > 0 and needs labels")
            return torch.full((n, 1), self.bos, dtype=torch.long, device=device)
        if not self.num_classes:
            raise ValueError("labels given to a transformer built without classes (num_classes=0)")
        labels = labels.to(device=device, dtype=torch.long).view(n, 1)
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        return self.bos + 1 + labels

    def new_cache(self, batch: int, device=None, dtype=None) -> KVCache:
        device = device or self.tok_emb.weight.device
        dtype = dtype or self.tok_emb.weight.dtype
        return KVCache(self.depth, batch, self.heads, self.context, self.width // self.heads, device, dtype)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``tokens`` ``(B, T)`` at positions ``cache.length ..`` (0 without a cache) -> logits ``(B, T, V)``."""
        b, t = tokens.shape
        start = cache.length if cache is not None else 0
        if start + t > self.context:
            raise ValueError(f"{start + t} positions exceed the context of {self.context}")
        x = self.tok_emb(tokens)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(start, start + t, device=tokens.device))
        x = self.drop(x)
        rope = (self.rope_cos, self.rope_sin) if self.positions == "rope" else None
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache, i)
        if cache is not None:
            cache.length = start + t
        x = self.ln_f(x)
        weight = self.head.weight if self.head is not None else self.tok_emb.weight[: self.vocab_size]
        return F.linear(x, weight)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        length: int,
        generator: torch.Generator | None = None,
        prompt: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        keep: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``n`` sequences of ``length`` tokens ``(n, length)`` int64, each starting with ``prompt`` ``(n, P)``
        (given tokens, returned as they are) or from nothing; of class ``labels`` ``(n,)`` for a conditional model
        (each window then starts with the class token).

        Beyond the context, windows restart from the last ``keep`` tokens (default: half the context) after
        ``bos`` (`window_start`). ``use_cache=False`` recomputes every window from scratch: the reference the
        cache is tested against, and the baseline of ``benchmarks/transformer_kv_cache.py``.
        """
        device = self.tok_emb.weight.device
        keep = self.context // 2 if keep is None else keep
        if not 0 <= keep <= self.context - 1:
            raise ValueError(f"keep={keep} must be in [0, context - 1] with context={self.context}")
        out = torch.zeros(n, length, dtype=torch.long, device=device)
        p = 0 if prompt is None else prompt.shape[1]
        if p:
            out[:, :p] = prompt.to(device)
        bos = self.start_tokens(n, labels, device)  # (n, 1): bos, or the class tokens
        cache = self.new_cache(n) if use_cache else None
        current = -1  # window start the cache holds
        kw = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        for j in range(p, length):
            s = window_start(j, self.context, keep)
            if cache is None:
                logits = self(torch.cat([bos, out[:, s:j]], 1))[:, -1]
            elif s != current:  # (re)fill the cache with the window's tokens so far
                cache.reset()
                logits = self(torch.cat([bos, out[:, s:j]], 1), cache)[:, -1]
                current = s
            else:  # one new position: the token generated last
                logits = self(out[:, j - 1 : j], cache)[:, -1]
            out[:, j] = sample_from_logits(logits, generator, **kw)
        return out
