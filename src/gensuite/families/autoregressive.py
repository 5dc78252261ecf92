"""Autoregressive family: a decoder-only transformer over the tokens of a swappable tokenizer.

``p(x) = prod_t p(x_t | x_<t)``: the tokenizer turns a batch into token sequences ``(B, T)``
(`gensuite.nets.tokenizers`), the sequence model reads ``[bos, x_0 .. x_{T-2}]`` and predicts ``x_0 .. x_{T-1}``
(`gensuite.nets.transformer`). The loss is the mean cross-entropy per token, and its sum over a sequence is the
exact NLL of the sequence:

- text (``bytes``): ``val/nll_bpd`` is bits per byte, ``val/bits_per_char`` bits per UTF-8 character (equal for
  ASCII text), ``val/perplexity`` the per-byte perplexity (torchmetrics);
- images (``pixels``): ``val/nll_bpd`` is bits per dim of the 8-bit images, comparable with the other families.
  With ``levels`` < 256 it is the 8-bit likelihood of a model that spreads each level's probability evenly over
  the 8-bit values it stands for; ``val/bits_per_token`` is then the bits per dim of the *quantised* images;
- VQ codes (``vq``): codes give no likelihood of the pixels, so ``val/nll_bpd`` is absent; ``val/bits_per_token``
  is the NLL of the codes (compare ``val/code_bits_unigram`` of the VQ-VAE run: independent codes).

Class-conditional (``model.num_classes=${data.num_classes}``, images only, pixels or VQ codes): every sequence
starts with a class token instead of ``bos`` (`gensuite.nets.transformer`), which is read and never predicted, so
the loss and ``val/nll_bpd`` are of ``p(x | y)``; ``sample`` takes ``labels`` (default: the shared balanced rule).

``sample`` returns images in [0, 1] for image tokenizers (the shared image evaluation runs on them) and token ids
for text (`decode` turns them into strings); samples use the key/value cache unless ``use_cache`` is off.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.text import Perplexity

from gensuite.errors import ConfigError
from gensuite.families.base import LIKELIHOOD_KEY, GenerativeModule, Panel
from gensuite.families.options import SamplingOptions, knob


@dataclasses.dataclass(frozen=True)
class TokenSampling(SamplingOptions):
    """How the next token is drawn (`gensuite.nets.transformer.sample_from_logits`): ``sampling.temperature=``,
    ``sampling.top_k=``, ``sampling.top_p=``."""

    temperature: float = knob(
        1.0, "softmax temperature of the next-token distribution (< 1: safer, > 1: more varied; 0: greedy)"
    )
    top_k: int | None = knob(None, "draw only from the k most likely tokens (null: all)")
    top_p: float | None = knob(None, "nucleus sampling: the smallest set of tokens holding probability p (null: all)")

    def check(self, model) -> None:
        t, k, p = self.temperature, self.top_k, self.top_p
        if t < 0 or (k is not None and k < 1) or (p is not None and not 0 < p <= 1):
            raise ConfigError(
                f"sampling settings out of range: temperature={t}, top_k={k}, top_p={p}",
                keys=("sampling.temperature", "sampling.top_k", "sampling.top_p"),
                fix="temperature >= 0 (0: greedy), top_k >= 1 or null, top_p in (0, 1] or null",
            )


class Autoregressive(GenerativeModule):
    """Next-token prediction over tokenized data.

    Args:
        net: a partial of the sequence model (``model/net=``) that this family completes with
            ``vocab_size`` (the tokenizer's) and ``context``.
        tokenizer: ``model/tokenizer=bytes|pixels|vq``.
        context: positions per forward pass; null: the tokenizer's sequence length (images). Text: the data's
            window length ``data.seq_len``.
        temperature, top_k, top_p: the default `TokenSampling` (``sampling.*=`` of sample.py / eval.py changes it
            per call). The image metrics use these too: keep 1.0 / null / null for an unbiased sample of the model.
        use_cache: sample with the key/value cache.
        text_length: tokens per text sample (may exceed the context: sliding windows).
        text_samples: text samples shown in TensorBoard's text tab and ``samples.txt``.
        num_classes: 0 (unconditional) or the classes of a class-token model (image data only).
    """

    family = "transformer"
    likelihood_kind = "exact"  # the chain rule over tokens, no bound
    Options = TokenSampling

    def __init__(
        self,
        net: Callable[..., nn.Module],
        tokenizer: nn.Module,
        context: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        text_length: int = 512,
        text_samples: int = 4,
        num_classes: int = 0,
        optimizer=None,
        scheduler=None,
    ):
        super().__init__(optimizer, scheduler, num_classes)
        if num_classes and tokenizer.modality == "text":
            raise ConfigError(
                f"num_classes={num_classes}: text has no classes, so a transformer over text cannot be conditional",
                keys=("num_classes",),
                fix="model.num_classes=0 for text data (class tokens are for labelled image data)",
            )
        seq_len = tokenizer.seq_len
        if context is None:
            if seq_len is None:
                raise ConfigError(
                    "text needs a context length", keys=("context",), fix="model.context=256 (or data.seq_len)"
                )
            context = seq_len
        if seq_len is not None and seq_len > context:
            raise ConfigError(
                f"the {type(tokenizer).__name__} makes sequences of {seq_len} tokens but context={context}",
                keys=("context",),
                fix=f"model.context={seq_len} (or null: the tokenizer's length)",
            )
        self.tokenizer = tokenizer
        # the class tokens are the net's (a user's own net needs a num_classes argument only to be conditional)
        classes = {"num_classes": num_classes} if num_classes else {}
        self.net = net(vocab_size=tokenizer.vocab_size, context=context, **classes)
        self.context = context
        self.default_options = TokenSampling(temperature, top_k, top_p)
        self.default_options.check(self)
        self.use_cache = use_cache
        self.text_length, self.text_samples = text_length, text_samples
        self.is_text = tokenizer.modality == "text"
        # exact epoch-level text metrics: sums over the validation set, reduced across DDP ranks
        self.val_perplexity = Perplexity()
        self.val_nats = SumMetric()
        self.val_chars = SumMetric()
        self._train_time = 0.0
        self._train_tokens = 0
        self._batch_start: float | None = None
        self._sample_tokens_per_s: float | None = None

    # -- tokens -------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        info = self.data_info()
        if info is None:
            return
        if info.modality != self.tokenizer.modality:
            fix = "model/tokenizer=bytes" if info.modality == "text" else "model/tokenizer=pixels (or vq)"
            raise ConfigError(
                f"data={info.name} is {info.modality} but the {type(self.tokenizer).__name__} reads "
                f"{self.tokenizer.modality}",
                fix=fix,
            )
        seq = info.seq_len
        if self.is_text and seq and seq > self.context:
            raise ConfigError(
                f"data.seq_len={seq} windows do not fit model.context={self.context}",
                fix=f"model.context={seq} or data.seq_len={self.context}",
            )

    def tokens(self, batch) -> torch.Tensor:
        """The batch's token sequences ``(B, T)`` int64."""
        return self.tokenizer.encode(batch[0])

    def token_nats(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of every token given the ones before it ``(B, T)`` nats, and the logits ``(B, T, V)``.
        The first input is ``bos``, or the class token of ``labels`` ``(B,)``: an input, never a target."""
        if self.conditional:
            first = self.net.start_tokens(len(tokens), labels, tokens.device)  # (B, 1) class tokens
        else:
            first = torch.full_like(tokens[:, :1], self.net.bos)
        logits = self.net(torch.cat([first, tokens[:, :-1]], 1))  # (B, T, V): position t predicts token t
        nats = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="none")
        return nats.view_as(tokens), logits

    # -- protocol -----------------------------------------------------------------------------------------------
    def losses(self, batch) -> dict[str, torch.Tensor]:
        nats, _ = self.token_nats(self.tokens(batch), self.batch_labels(batch))
        loss = nats.mean()
        return {"loss": loss, "bits_per_token": loss.detach() / math.log(2)}

    def has_likelihood(self) -> bool:
        return bool(self.tokenizer.data_likelihood)

    def nll(self, batch) -> torch.Tensor:
        """Exact NLL of each example, nats ``(B,)``: of its bytes (text) or 8-bit pixels (`PixelTokenizer`)."""
        tokens = self.tokens(batch)
        return self.token_nats(tokens, self.batch_labels(batch))[0].sum(1) + self.tokenizer.dequantisation_nats(tokens)

    def validation_step(self, batch, batch_idx):
        # one forward pass gives the loss, the exact NLL and the perplexity (the base class would run two)
        tokens = self.tokens(batch)
        nats, logits = self.token_nats(tokens, self.batch_labels(batch))
        bsz, length = tokens.shape
        values = {"val/loss": nats.mean(), "val/bits_per_token": nats.mean() / math.log(2)}
        if self.has_likelihood():
            per_example = nats.sum(1) + self.tokenizer.dequantisation_nats(tokens)
            values["val/nll_nats"] = per_example.mean()
            values[LIKELIHOOD_KEY] = per_example.mean() / (self.data_dims(batch) * math.log(2))
        self.log_dict(values, on_epoch=True, sync_dist=True, batch_size=bsz)
        self.val_perplexity.update(logits.float(), tokens)
        self.log("val/perplexity", self.val_perplexity, on_epoch=True, batch_size=bsz)
        if self.is_text:
            self.val_nats.update(nats.sum())
            self.val_chars.update(self.tokenizer.characters(tokens).sum())

    def on_validation_epoch_end(self) -> None:
        if self.is_text and not self.trainer.sanity_checking:
            chars = self.val_chars.compute()
            if chars > 0:
                # from metrics computed over every rank: the same on each, the mean over ranks leaves it as is
                self.log("val/bits_per_char", self.val_nats.compute() / (chars * math.log(2)), sync_dist=True)
        self.val_nats.reset()
        self.val_chars.reset()
        if self._sample_tokens_per_s is not None:
            # set on rank 0 only (the Evaluation callback draws panels there): no reduction may wait for the other
            # ranks. rank_zero_only makes Lightning skip the reduction; sync_dist=True only spares the warning that
            # an epoch-level value is not reduced.
            self.log("time/sample_tokens_per_s", self._sample_tokens_per_s, rank_zero_only=True, sync_dist=True)
            self._sample_tokens_per_s = None
        if self._train_time > 0:  # again here: the final `validate` keeps only what validation logs
            # every rank trained the same batches, so every rank logs this: per-process throughput, mean over ranks
            self.log("time/train_tokens_per_s", self._train_tokens / self._train_time, sync_dist=True)

    # -- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        n: int,
        length: int,
        generator=None,
        prompt: torch.Tensor | None = None,
        labels=None,
        options: TokenSampling | None = None,
    ) -> torch.Tensor:
        """``n`` token sequences ``(n, length)`` drawn with ``options`` (default: the model's), of class ``labels``."""
        o = self.options_or_default(options)
        extra = {"labels": labels} if self.conditional else {}
        return self.net.generate(
            n, length, generator=generator, prompt=prompt, use_cache=self.use_cache,
            temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, **extra,
        )  # fmt: skip

    @torch.no_grad()
    def sample(self, n: int, generator=None, labels=None, options: TokenSampling | None = None) -> torch.Tensor:
        """Images ``(n, C, H, W)`` in [0, 1] (image tokenizers) or token ids ``(n, text_length)`` (text); a
        conditional model draws class ``labels`` ``(n,)`` (default: balanced)."""
        if self.is_text:
            return self.generate(n, self.text_length, generator, options=options)
        tokens = self.generate(n, self.tokenizer.seq_len, generator, labels=self.labels_for(n, labels), options=options)
        return self.tokenizer.decode(tokens)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Token ids ``(n, L)`` -> n strings (text tokenizers)."""
        return self.tokenizer.decode(tokens)

    @torch.no_grad()
    def panels(self, batch, generator=None, n: int = 64) -> dict[str, Panel]:
        if self.is_text:
            k = min(n, self.text_samples)
            t0 = time.perf_counter()
            tokens = self.generate(k, self.text_length, generator)
            self._sample_tokens_per_s = k * self.text_length / (time.perf_counter() - t0)
            texts = self.decode(tokens)
            # fenced blocks: TensorBoard's text tab renders markdown, and would reflow plain text
            return {"samples": "\n\n".join(f"sample {i}:\n\n```\n{t}\n```" for i, t in enumerate(texts))}
        out: dict[str, Panel] = {
            "samples": self.sample(n, generator),
            "completions": self.completions(batch, generator),
        }
        if self.conditional:
            out["class_grid"] = self.class_grid(generator)
        return out

    @torch.no_grad()
    def completions(self, batch, generator=None, rows: int = 8, cols: int = 4) -> torch.Tensor:
        """ImageGPT-style: validation images given their first half of tokens (about the top half of the image),
        completed ``cols - 2`` times. Rows ``(rows, cols, C, H, W)``: the image with its bottom half greyed, the
        completions, the real image."""
        x = batch[0][:rows]
        tokens = self.tokens((x,))
        half = tokens.shape[1] // 2
        prompt = tokens[:, :half].repeat_interleave(cols - 2, 0)
        y = self.batch_labels(batch)
        y = None if y is None else y[:rows].repeat_interleave(cols - 2, 0)  # a conditional model: the image's class
        done = self.tokenizer.decode(self.generate(len(prompt), tokens.shape[1], generator, prompt=prompt, labels=y))
        done = done.view(len(x), cols - 2, *x.shape[1:])
        given = x.clone()
        given[..., x.shape[-2] // 2 :, :] = 0.5
        return torch.cat([given[:, None], done, x[:, None]], 1)

    # -- optimisation -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        factory = self.optimizer_factory
        weight_decay = getattr(factory, "keywords", {}).get("weight_decay", 0.0) if factory else 0.0
        # only the sequence model trains (a vq tokenizer is frozen); decay only its weight matrices
        opt = self.build_optimizer(self.net.parameter_groups(weight_decay))
        if self.scheduler_factory is None:
            return opt
        scheduler = self.build_scheduler(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- training throughput ------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._batch_start is None:
            return
        self._train_time += time.perf_counter() - self._batch_start
        self._train_tokens += batch[0].shape[0] * (self.tokenizer.seq_len or batch[0].shape[1])
        self.log("time/train_tokens_per_s", self._train_tokens / max(self._train_time, 1e-9))
