"""A method is a loss over the model's outputs; the training loop never asks which one runs."""
from __future__ import annotations

import torch
from torch import nn

from models.network import ModelOutput


class Method(nn.Module):
    """Subclasses return the loss to minimise and its named parts for logging.

    `source_outputs` maps each source name to its logits for exactly the images
    of the batch (live or from the cache: the method cannot tell).
    """

    def forward(self, output: ModelOutput, batch: dict[str, torch.Tensor],
                source_outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError
