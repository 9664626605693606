"""The scanner adversary (``TrainConfig.source_adversary``): a small head that tells the acquisition source of
the classes several sources imaged, through gradient reversal (Ganin & Lempitsky 2015), so the features stop
carrying the scanner. Training only: the bundle's network is the plain architecture."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from leukoview.jobs.rundata import Run, balanced_weights


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-weight`` backward (the gradient-reversal layer)."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    return _ReverseGradient.apply(x, weight)


def adversary_weight(progress: float) -> float:
    """The reversal's strength over training (0 -> 1 as ``progress`` goes 0 -> 1; Ganin & Lempitsky's schedule), so
    the adversary does not pull on features the classifier has not formed yet."""
    return float(2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class _SourceAdversary:
    """The source adversary of a training run (``TrainConfig.source_adversary``): the classifier's input is taken
    by a hook, and a small head, through gradient reversal, tells the source of the images whose class several
    sources imaged. Its balanced accuracy per epoch goes into the training log (0.5 for two sources: the
    features no longer tell the scanners apart)."""

    def __init__(self, model: nn.Module, classifier: str, n_sources: int, weights: torch.Tensor,
                 device: torch.device):
        layer = model.get_submodule(classifier)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"source_adversary needs a linear classifier layer, {classifier} is {type(layer)}")
        self.head = nn.Sequential(nn.Linear(layer.in_features, 128), nn.ReLU(), nn.Linear(128, n_sources)).to(device)
        self.criterion = nn.CrossEntropyLoss(weight=weights.to(device))
        self.n_sources, self._features = n_sources, None
        self._hook = layer.register_forward_pre_hook(lambda _m, inputs: setattr(self, "_features", inputs[0]))
        self._right = np.zeros(n_sources)
        self._count = np.zeros(n_sources)
        self._loss, self._n = 0.0, 0

    def loss(self, domains: torch.Tensor, weight: float) -> torch.Tensor:
        keep = domains >= 0
        if not bool(keep.any()):
            return self._features.sum() * 0.0
        logits = self.head(reverse_gradient(self._features.flatten(1)[keep].float(), weight))
        target = domains[keep]
        loss = self.criterion(logits, target)
        called = logits.argmax(1).detach().cpu().numpy()
        truth = target.cpu().numpy()
        np.add.at(self._count, truth, 1)
        np.add.at(self._right, truth, called == truth)
        self._loss += float(loss.detach()) * len(truth)
        self._n += len(truth)
        return loss

    def epoch_summary(self) -> dict:
        present = self._count > 0
        out = {"source_adversary_loss": self._loss / max(self._n, 1),
               "source_adversary_balanced_accuracy": float((self._right[present] / self._count[present]).mean())
               if present.any() else float("nan")}
        self._right[:], self._count[:], self._loss, self._n = 0, 0, 0.0, 0
        return out

    def remove(self) -> None:
        self._hook.remove()


def _source_adversary(run: Run, model: nn.Module) -> _SourceAdversary | None:
    """The run's source adversary (its head is trained by the run's optimiser), or None when the config has
    none. Refuses a dataset without two sources of one class: there would be nothing to be invariant to."""
    if not run.cfg.source_adversary:
        return None
    sources, shared = run.adversary_sources()
    if len(sources) < 2 or not shared:
        raise ValueError(f"source_adversary needs a class imaged by two or more sources in the train split; "
                         f"{run.cfg.dataset} has sources {sources or 'none'}")
    domains = np.array([d for d in run.domains("train") if d >= 0])
    weights = balanced_weights(np.bincount(domains, minlength=len(sources)))
    return _SourceAdversary(model, run.arch.classifier, len(sources), weights, run.device)


# inverse regularisation strengths the field head tries (on standardised features); validation chooses
