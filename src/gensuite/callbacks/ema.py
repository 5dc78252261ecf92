"""EMA of the weights through Lightning's `EMAWeightAveraging`, optionally of one sub-module only.

Lightning's callback averages the whole LightningModule. A GAN wants the generator averaged and the
discriminator left alone (averaging it is wasted memory and time, and at the end of training Lightning copies
the average into the module); ``module="decoder"`` restricts the average to ``pl_module.decoder``. Everything
else — when to update, swapping the averaged weights in for validation, the checkpoint layout (averaged weights
in ``state_dict``, raw weights in ``current_model_state``) — is Lightning's.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging

from gensuite import lightning_compat


class EMA(EMAWeightAveraging):
    """Exponential moving average of ``pl_module`` (``module=None``) or of ``getattr(pl_module, module)``.

    Args:
        decay: EMA decay per update (0.999 for short CPU runs, 0.9999 for long ones).
        module: name of the sub-module to average; None averages the whole LightningModule.
        update_every_n_steps, update_starting_at_step: as in Lightning (in trainer.global_step units).
    """

    def __init__(
        self,
        decay: float = 0.999,
        module: str | None = None,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        use_buffers: bool = True,
        **kwargs: Any,
    ):
        super().__init__(
            decay=decay,
            use_buffers=use_buffers,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            **kwargs,
        )
        self.decay, self.module = decay, module

    def _target(self, pl_module: L.LightningModule):
        return pl_module if self.module is None else getattr(pl_module, self.module)

    @property
    def _prefix(self) -> str:
        return f"{self.module}." if self.module else ""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.module is None:
            return super().setup(trainer, pl_module, stage)
        if stage == "fit":
            lightning_compat.average_only(self, self._target(pl_module), pl_module.device)

    def _follow_until_first_update(self, pl_module: L.LightningModule) -> None:
        """Before its first update the average holds the *initial* weights (copied at setup); a run that validates,
        checkpoints or ends before ``update_starting_at_step`` would evaluate and save its untrained start (a
        1-minute diffusion run of 75 steps sampled from its random init). Until the first update (``n_averaged``
        0; that update copies the weights anyway), the average follows the current weights."""
        average = lightning_compat.averaged_model(self)
        if average is not None and int(average.n_averaged) == 0:
            target = self._target(pl_module) if self.module is not None else pl_module
            average.module.load_state_dict(target.state_dict())

    # Lightning's hooks only use pl_module to update / swap / copy: hand them the averaged sub-module instead.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, self._target(pl_module), outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, self._target(pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        self._follow_until_first_update(pl_module)
        super().on_train_end(trainer, self._target(pl_module))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._follow_until_first_update(pl_module)
        super().on_validation_epoch_start(trainer, self._target(pl_module))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        super().on_validation_epoch_end(trainer, self._target(pl_module))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._follow_until_first_update(pl_module)  # the checkpoint's state_dict: the weights sampling will use
        averaged = lightning_compat.averaged_model(self)
        if self.module is None or averaged is None:
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        average = averaged.state_dict()
        checkpoint["current_model_state"] = dict(checkpoint["state_dict"])
        state = dict(checkpoint["state_dict"])
        for name, value in average.items():
            if name.startswith("module."):
                state[self._prefix + name[len("module.") :]] = value
        checkpoint["state_dict"] = state
        checkpoint["averaging_state"] = {n: v for n, v in average.items() if not n.startswith("module.")}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        averaged = lightning_compat.averaged_model(self)
        if self.module is None or averaged is None:
            return super().on_load_checkpoint(trainer, pl_module, checkpoint)
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            n = len(self._prefix)
            average = {"module." + k[n:]: v for k, v in checkpoint["state_dict"].items() if k.startswith(self._prefix)}
            averaged.load_state_dict(average | checkpoint["averaging_state"])
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            target_state = {
                k[len(self._prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(self._prefix)
            }
            averaged.module.load_state_dict(target_state, strict=False)
