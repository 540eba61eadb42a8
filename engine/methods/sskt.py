"""SSKT: task loss + alpha * sum over sources of aux_loss(head_s, source_s(x))."""
from __future__ import annotations

from engine.losses import AUX_LOSSES
from engine.methods.scratch import Scratch


class SSKT(Scratch):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.aux_loss = AUX_LOSSES[cfg.aux_loss]
        self.alpha = cfg.alpha
        self.aux_kw = {"temperature": cfg.temperature, "reduction": cfg.aux_reduction, "gamma": cfg.focal_gamma}

    def forward(self, output, batch, source_outputs):
        loss, terms = super().forward(output, batch, source_outputs)
        for name, head_logits in output.aux.items():
            term = self.aux_loss(head_logits, source_outputs[name], **self.aux_kw)
            loss = loss + self.alpha * term
            terms[f"aux/{name}"] = term.detach()
        return loss, terms
