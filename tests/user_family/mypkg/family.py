import torch
from torch import nn

from gensuite.families.base import GenerativeModule


class MeanImage(GenerativeModule):
    """The smallest family: a learned mean image plus Gaussian pixel noise. Only losses() and sample()."""

    family = "mean_image"

    def __init__(self, channels: int, image_size: int, noise: float = 0.1, optimizer=None, scheduler=None):
        super().__init__(optimizer, scheduler)
        self.logits = nn.Parameter(torch.zeros(channels, image_size, image_size))
        self.noise = noise

    def losses(self, batch):
        return {"loss": ((torch.sigmoid(self.logits) - batch[0]) ** 2).mean()}

    @torch.no_grad()
    def sample(self, n, generator=None):
        mean = torch.sigmoid(self.logits).expand(n, *self.logits.shape)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        return (mean + self.noise * eps).clamp(0, 1)
