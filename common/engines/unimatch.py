"""UniMatch trainer (Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic Segmentation",
CVPR 2023), following the authors' medical code (``more-scenarios/medical/unimatch.py``).

One iteration takes a batch of unlabelled images (each with its weak view ``image``, two strong views and a CutMix
box per strong view, made by the data pipeline) and a labelled batch, and

1. predicts the weak views in eval mode without gradients: these are the predictions of the CutMix partners (the
   authors draw the partners from a second shuffled loader over the same images; here the partner of an image is
   the next image of the same shuffled batch, so one loader serves both and a resumed run replays it exactly);
2. pastes each strong view's box from the partner's strong view, and fills the box of that view's target with the
   partner's pseudo-label and confidence (:func:`common.transforms.cutmix.cutmix`);
3. runs the network in training mode on labelled + weak images with the feature-perturbation stream
   (``network(x, perturb=True)``: clean and perturbed logits stacked along the batch,
   :class:`common.networks.feature_perturbation.FeaturePerturbationUNet`), and on the two mixed strong views;
4. takes pseudo-labels and confidences from the (detached) weak predictions and steps on
   ``(L_s + mu / 2 (L_s1 + L_s2) + lambda L_fp) / 2`` (:mod:`common.losses.unimatch`): L_s is ``(CE + Dice) / 2`` on
   the labels, the unlabelled terms the Dice over the pixels whose confidence is at least ``semi_threshold``.

The unlabelled loader drives the epoch (an epoch is a pass over the unlabelled images, as the authors'); labelled
batches come from an endless pass over the labelled loader. Without an unlabelled loader the labelled one drives it
and the loss is L_s. With ``strong_weight`` and ``feature_weight`` both 0 (the bundle's ``supervised_only.json``) the
unlabelled batches only count the iterations (same schedule as UniMatch) and never reach the network.
``engine.state.output`` holds the loss terms and the ``coverage`` (share of weak-view pixels at or above the
threshold, the authors' ``mask_ratio``) for ``StatsHandler`` through :class:`common.engines.utils.ScalarTerms`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from common.engines.utils import AmpTrainer, endless, step_output
from common.losses.unimatch import ConfidentDiceLoss, confident_pseudo_labels, supervised_loss, unimatch_loss
from common.transforms.cutmix import cutmix

__all__ = ["UniMatchTrainer", "cutmix_partners"]

STRONG_KEYS = ("image_strong1", "image_strong2")
BOX_KEYS = ("cutmix_box1", "cutmix_box2")


def cutmix_partners(batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index of each item's CutMix partner in its batch: the next item (the last one's is the first)."""
    return torch.roll(torch.arange(batch_size, device=device), -1)


class UniMatchTrainer(AmpTrainer):
    """UniMatch's training loop (weak-to-strong consistency with two strong views and feature perturbation) as a
    MONAI ``Trainer``; settings default to the authors' medical (ACDC) values.

    Args:
        device: device of the network.
        max_epochs: epochs (passes over the unlabelled loader; over the labelled one when there is no unlabelled).
        train_data_loader: labelled batches ``{"image": (B, Cin, H, W), "label": (B, 1, H, W)}``.
        network: ``(B, Cin, H, W)`` -> ``(B, C, H, W)`` logits; ``network(x, perturb=True)`` -> ``(2B, C, H, W)``,
            the clean then the feature-perturbed logits (needed when ``feature_weight > 0``).
        optimizer: its optimiser (authors: SGD, lr 0.01, momentum 0.9, weight decay 1e-4, poly decay per iteration).
        num_classes: C, classes including background.
        unlabeled_data_loader: unlabelled batches ``{"image": weak view (Bu, Cin, H, W), "image_strong1",
            "image_strong2": strong views (Bu, Cin, H, W), "cutmix_box1", "cutmix_box2": (Bu, 1, H, W) bool}``;
            ``None``: labels only.
        loss_function: supervised loss of logits and labels (default the authors' ``(CE + Dice) / 2``).
        semi_threshold: confidence at or above which a weak-view pixel's pseudo-label is used (authors: 0.95).
        strong_weight: mu, weight of the mean of the strong views' losses (authors: 0.5, i.e. 0.25 per view).
        feature_weight: lambda, weight of the feature-perturbed prediction's loss (authors: 0.5).
        num_strong_views: strong views used, 1 or 2 (authors: 2; FixMatch: 1).
        inferer: how the network is run on a batch (``SimpleInferer``; keyword arguments reach the network).
        trainer_kwargs: the remaining arguments of :class:`~common.engines.utils.AmpTrainer` (``epoch_length``,
            ``train_handlers``, ``amp``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        num_classes: int,
        unlabeled_data_loader: Iterable | None = None,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        semi_threshold: float = 0.95,
        strong_weight: float = 0.5,
        feature_weight: float = 0.5,
        num_strong_views: int = 2,
        inferer: Inferer | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        if num_strong_views not in (1, 2):
            raise ValueError(f"num_strong_views must be 1 or 2, got {num_strong_views}.")
        if strong_weight < 0 or feature_weight < 0:
            raise ValueError("strong_weight and feature_weight must not be negative.")
        if unlabeled_data_loader is not None and hasattr(unlabeled_data_loader, "__len__"):
            if len(unlabeled_data_loader) == 0:  # type: ignore[arg-type]
                raise ValueError(
                    "the unlabelled data loader is empty: fewer unlabelled images than unlabeled_batch_size "
                    "(full batches only); lower unlabeled_batch_size."
                )
        driver = unlabeled_data_loader if unlabeled_data_loader is not None else train_data_loader
        super().__init__(device, max_epochs, driver, **trainer_kwargs)
        self.network = network
        self.optimizer = optimizer
        self.num_classes = num_classes
        self.labeled_data_loader = train_data_loader
        self.unlabeled_data_loader = unlabeled_data_loader
        self.loss_function = supervised_loss() if loss_function is None else loss_function
        self.unlabeled_loss = ConfidentDiceLoss(num_classes, semi_threshold)
        self.semi_threshold = semi_threshold
        self.strong_weight = strong_weight
        self.feature_weight = feature_weight
        self.num_strong_views = num_strong_views
        self.inferer = SimpleInferer() if inferer is None else inferer
        # made here, not at the first draw, so that a resumed run finds it and restores its place in the loader
        self._labeled: Iterator[Any] | None = (
            endless(train_data_loader, "labelled") if unlabeled_data_loader is not None else None
        )

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the unlabelled images reach the loss (an unlabelled loader and a positive weight)."""
        return self.unlabeled_data_loader is not None and (self.strong_weight > 0 or self.feature_weight > 0)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    def _iteration(self, engine: UniMatchTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One UniMatch step. Returns the output dict (tensors and scalar terms)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if engine._labeled is not None:
            labelled, unlabelled = next(engine._labeled), batchdata
        else:
            labelled, unlabelled = batchdata, None
        images, labels = engine.prepare_batch(labelled, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        labels = labels.long()
        zero = torch.zeros((), device=engine.state.device)
        terms: dict[str, torch.Tensor] = {"loss_strong": zero, "loss_fp": zero}
        coverage = 0.0
        strong_on = engine.uses_unlabeled and engine.strong_weight > 0
        feature_on = engine.uses_unlabeled and engine.feature_weight > 0

        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            if not engine.uses_unlabeled:
                engine.network.train()
                logits = engine.inferer(images, engine.network)
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                loss_sup = engine.loss_function(logits.float(), labels)
                loss = unimatch_loss(loss_sup)
            else:
                weak = engine._to_device(unlabelled[Keys.IMAGE])
                num_l, num_u = images.shape[0], weak.shape[0]
                views = range(engine.num_strong_views) if strong_on else range(0)
                if strong_on:
                    # 1. the partners' weak predictions, in eval mode as the authors'
                    with torch.no_grad():
                        engine.network.eval()
                        mix_labels, mix_confidence = confident_pseudo_labels(engine.inferer(weak, engine.network))
                    # 2. each strong view gets its box from the partner's strong view
                    partner = cutmix_partners(num_u, weak.device)
                    strong = [engine._to_device(unlabelled[STRONG_KEYS[v]]) for v in views]
                    boxes = [engine._to_device(unlabelled[BOX_KEYS[v]]) for v in views]
                    strong = [cutmix(box, (s, s[partner]))[0] for s, box in zip(strong, boxes)]
                # 3. labelled + weak with the feature-perturbation stream, then the mixed strong views
                engine.network.train()
                both = torch.cat([images, weak])
                if feature_on:
                    logits_all, logits_fp = engine.inferer(both, engine.network, perturb=True).chunk(2)
                else:
                    logits_all = engine.inferer(both, engine.network)
                logits, logits_weak = logits_all.split([num_l, num_u])
                logits_strong = (
                    engine.inferer(torch.cat(strong), engine.network).chunk(len(strong)) if strong_on else ()
                )
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                # 4. pseudo-labels of the weak views, the box of each strong view's target from its partner
                pseudo, confidence = confident_pseudo_labels(logits_weak.detach())
                coverage = float((confidence >= engine.semi_threshold).float().mean())
                loss_sup = engine.loss_function(logits.float(), labels)
                loss_strong = []
                for v, logits_v in zip(views, logits_strong):
                    target, target_conf = cutmix(
                        boxes[v], (pseudo, mix_labels[partner]), (confidence, mix_confidence[partner])
                    )
                    loss_strong.append(engine.unlabeled_loss(logits_v, target, target_conf))
                    terms[f"loss_strong{v + 1}"] = loss_strong[-1]
                loss_fp = engine.unlabeled_loss(logits_fp[num_l:], pseudo, confidence) if feature_on else None
                if loss_strong:
                    terms["loss_strong"] = torch.stack(loss_strong).mean()
                if loss_fp is not None:
                    terms["loss_fp"] = loss_fp
                loss = unimatch_loss(loss_sup, loss_strong, loss_fp, engine.strong_weight, engine.feature_weight)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine._backward_step(loss, engine.optimizer)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.scaler is not None:
            engine.scaler.update()

        engine.state.output = step_output(images, labels, logits, loss, loss_sup=loss_sup, **terms, coverage=coverage)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
