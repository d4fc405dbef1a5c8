"""Trainer of the translation-based semi-supervised segmenter of Vorontsov et al., "Towards annotation-efficient
segmentation via image-to-image translation", MedIA 2022 (arXiv 1904.01636), on the base its baselines share.

:class:`TranslationTrainerBase` holds one iteration's plumbing: it takes a batch of P images ("present": the target
is visible; ``labelled`` flags the few with masks; the P loader drives the epoch) and, for the trainers given an
``absent_data_loader``, a batch of unpaired A images ("absent") from an endless iterator over the A loader; runs the
subclass's loss terms under autocast, an optional adversary step, one weighted generator / segmenter step (gradients
averaged over the processes of a distributed run), and returns the terms. :class:`TranslationModelTrainer` is the
proposed method and its ablations on :class:`~common.networks.translation.TranslationSegNet`; the baselines (seg-only,
autoencoder, mean teacher) are in :mod:`common.engines.translation_baselines`.

:class:`TranslationModelTrainer` by ``directions``:

* ``"both"`` (the proposed method, Sec. 3): generator step on
  ``lambda_adv * L_adv + lambda_rec * L_rec + lambda_cyc * L_cyc + lambda_lat * L_lat + lambda_seg * L_seg``, after
  one hinge step of the two discriminators (``D_A`` judges ``x_PA`` against real A, ``D_P`` judges ``x_AP`` against
  real P). With ``x_PA = G_com(c_P)``, ``x_PP = x_PA + G_res(c_P, u_P)``, ``x_AA = G_com(c_A)``,
  ``x_AP = x_AA + G_res(c_A, z)`` (``z ~ N(0, I)``), ``(c_AP, u_AP) = E(x_AP)``:
  ``L_rec = |x_PP - x_P| + |x_AA - x_A|``, ``L_cyc = |G_com(c_AP) - x_A|``,
  ``L_lat = |E(x_PP) - (c_P, u_P)| + |c(E(x_PA)) - c_P| + |c(E(x_AA)) - c_A| + |(c_AP, u_AP) - (c_A, z)|``
  (Eq. 9: the codes of the translated images ``x_PA``, ``x_AP`` and of the reconstructions ``x_PP``, ``x_AA``; L1
  means over the whole code where the authors' ``bd_segmentation.py`` compares whole codes, over the common code
  where it compares common codes), ``L_adv = -D_A(x_PA) - D_P(x_AP)``, ``L_seg`` the soft Dice of ``G_res`` in mode
  "segment" on the labelled P. As in the authors' ``bd_segmentation.py`` the discriminators take their step first,
  on the fakes of this iteration's forward pass, and the generator's adversarial term is then computed with the
  updated discriminators.
* ``"p_to_a"``: the "P to A only" ablation: no A->P translation (no ``x_AP``, ``D_P``, cycle or ``(c_AP, u_AP)``
  terms).
* ``"none"``: the "no translation" ablation: no discriminators; the decoders only reconstruct (``L_rec``, ``L_lat`` of
  ``x_PP`` and ``x_AA``) next to the segmentation.

The weights of the terms in use can be scaled to sum to ``lambda_sum`` ("all objective weights for the proposed
method were always normalized so that they sum to 1", Sec. 4; ``lambda_enforce_sum`` in the authors' code, off by
default there and in the configs); with AMSGrad this matters through the weight decay, whose pull is then ~100 times
stronger beside the loss gradient than with the raw weights. The discriminator loss is not weighted (the authors'
``bd_segmentation.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.nn.utils import parametrize
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.engines.utils import AmpTrainer, endless
from common.losses.gan import hinge_discriminator_loss, hinge_generator_loss
from common.losses.soft_dice import soft_dice_loss
from common.networks.translation import TranslationSegNet
from common.networks.translation_baseline import TranslationBaselineNet

__all__ = [
    "DIRECTIONS",
    "HINGE_REDUCTIONS",
    "TranslationModelTrainer",
    "TranslationTrainerBase",
    "segmentation_parameter_groups",
]

HINGE_REDUCTIONS = ("element", "mean")  # the discriminators' hinge: per score-map element (authors), or on the mean
DIRECTIONS = ("both", "p_to_a", "none")


def _average_gradients(optimizer: Optimizer) -> None:
    """Averages the gradients of ``optimizer``'s parameters over the processes of a distributed run (no-op
    otherwise). The iteration calls the encoder and decoders many times through their methods, which
    ``DistributedDataParallel`` (it hooks ``forward`` only) cannot follow, so the networks stay unwrapped and the
    gradients are reduced here; a parameter without gradient on this rank (e.g. the segmentation head when the
    rank's batch holds no label) contributes zeros, so every rank reduces the same tensors."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def segmentation_parameter_groups(
    network: TranslationSegNet | TranslationBaselineNet, segmentation_weight_decay: float
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of ``network``: every parameter but the segmentation-only ones (the optimiser's
    ``weight_decay``), then those of ``network.segmentation_parameters()`` with ``segmentation_weight_decay`` (0: no
    decay). The authors' code (genseg ``utils/experiment.py``, ``--weight_decay 1e-4``) decays every parameter
    alike, so the authors' setting is ``segmentation_weight_decay`` equal to ``weight_decay``."""
    segmentation = network.segmentation_parameters()
    ids = {id(p) for p in segmentation}
    return [
        {"params": [p for p in network.parameters() if id(p) not in ids]},
        {"params": segmentation, "weight_decay": segmentation_weight_decay},
    ]


class TranslationTrainerBase(AmpTrainer):
    """The iteration shared by the trainers of Vorontsov et al. (2022) and its baselines, as a MONAI ``Trainer``
    (module docstring). A subclass sets :attr:`weights` (``{term: weight}``) and implements :meth:`_terms`; one with
    an adversary overrides :meth:`_adversary_step` and :meth:`_adversarial_terms`.

    Args:
        device: device of the networks.
        max_epochs: epochs (passes over the P loader, or ``epoch_length`` iterations).
        train_data_loader: P batches ``{"image": (B, C, H, W), "label": (B, 1, H, W), "labelled": (B,)}``
            (``labelled`` 1 where the mask may be used; missing: all labelled).
        network: the :class:`~common.networks.translation.TranslationSegNet` or the
            :class:`~common.networks.translation_baseline.TranslationBaselineNet`.
        optimizer: optimiser of ``network`` (AMSGrad, betas (0.5, 0.999), lr 1e-3, weight decay 1e-4 in the authors'
            code; :func:`segmentation_parameter_groups` sets the segmentation-only parameters' decay apart).
        absent_data_loader: A batches ``{"image": (B', C, H, W)}``, drawn once per iteration when given (None: the
            iteration reads no A image and :meth:`_terms` gets ``x_a`` None).
        trainer_kwargs: the remaining arguments of :class:`~common.engines.utils.AmpTrainer` (``epoch_length``,
            ``train_handlers``, ``amp``, ``optim_set_to_none``, ...) but ``decollate``: outputs are not decollated
            (P and A batches may differ in size).
    """

    weights: dict[str, float]

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: TranslationSegNet | TranslationBaselineNet,
        optimizer: Optimizer,
        absent_data_loader: DataLoader | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, decollate=False, **trainer_kwargs)
        self.network = network
        self.optimizer = optimizer
        self.absent_data_loader = absent_data_loader
        # made here, not at the first draw, so that a resumed run finds it and restores its place in the loader
        self._absent: Iterator[Any] | None = (
            endless(absent_data_loader, "absent-domain") if absent_data_loader is not None else None
        )

    def _step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            _average_gradients(optimizer)
            self.scaler.step(optimizer)
        else:
            loss.backward()
            _average_gradients(optimizer)
            optimizer.step()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    def _next_absent(self) -> torch.Tensor:
        """The next ``(B', C, H, W)`` A batch on the device."""
        if self._absent is None:
            self._absent = endless(self.absent_data_loader, "absent-domain")
        return self._to_device(torch.as_tensor(next(self._absent)[Keys.IMAGE]))

    def _segmentation_loss(
        self, c: torch.Tensor, u: torch.Tensor, skips: Sequence[torch.Tensor], labels: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Soft Dice of the segmentation output on the labelled images (``mask``, ``(B,)`` bool); 0 without any."""
        if not bool(mask.any()):
            return torch.zeros((), device=c.device)
        logits = self.network.segment_logits(c[mask], u[mask], [s[mask] for s in skips], labels.shape[-2:])
        return soft_dice_loss(torch.sigmoid(logits.float()), labels[mask])

    def _train_mode(self) -> None:
        """Puts the trained networks in training mode before the forward pass."""
        self.network.train()

    def _terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The loss terms of the generator / segmenter step (unweighted scalars, keys of :attr:`weights`) and the
        tensors the adversary step needs (empty without adversary), from P images ``x_p`` ``(B, C, H, W)``, A images
        ``x_a`` ``(B', C, H, W)`` (or None), masks ``labels`` ``(B, 1, H, W)`` and the labelled flags ``mask``
        ``(B,)``; run under autocast and ``parametrize.cached()``."""
        raise NotImplementedError

    def _adversary_step(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, fakes: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The adversary's own step, after the forward pass and before the generator step; returns its logged terms
        (not part of the generator loss). None here."""
        return {}

    def _adversarial_terms(self, fakes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generator terms computed after :meth:`_adversary_step` (with the updated adversary). None here."""
        return {}

    def _iteration(self, engine: TranslationTrainerBase, batchdata: dict[str, Any]) -> dict[str, Any]:
        """The forward pass and its terms, the adversary step (if any), then one generator/segmenter step on the
        weighted terms. Returns the batch, the loss and the terms."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        x_p = engine._to_device(torch.as_tensor(batchdata[Keys.IMAGE]))
        labels = engine._to_device(torch.as_tensor(batchdata[Keys.LABEL]))
        flags = batchdata.get("labelled")
        mask = (
            torch.ones(x_p.shape[0], dtype=torch.bool, device=x_p.device)
            if flags is None
            else engine._to_device(torch.as_tensor(flags)).bool().view(-1)
        )
        x_a = engine._next_absent() if engine.absent_data_loader is not None else None
        engine._train_mode()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        # spectral norm's W / sigma is computed once per step, not at each of the many calls of E, G and D
        with engine._autocast(), parametrize.cached():
            terms, fakes = engine._terms(x_p, x_a, labels, mask)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        adversary = engine._adversary_step(x_p, x_a, fakes)
        with engine._autocast(), parametrize.cached():
            terms.update(engine._adversarial_terms(fakes))
            loss = sum(engine.weights[k] * v for k, v in terms.items())
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine._step(loss, engine.optimizer)
        terms.update(adversary)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.scaler is not None:
            engine.scaler.update()
        engine.state.output = {
            Keys.IMAGE: x_p,
            Keys.LABEL: labels,
            Keys.LOSS: loss.detach(),
            **{k: v.detach() for k, v in terms.items()},
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class TranslationModelTrainer(TranslationTrainerBase):
    """The proposed method of Vorontsov et al. (2022) and its ablations (module docstring: the directions and loss
    terms). Loss weights default to the authors' code (3, 50, 50, 1, 0.01).

    Args:
        device, max_epochs, train_data_loader, optimizer, trainer_kwargs: as :class:`TranslationTrainerBase`.
        network: the :class:`~common.networks.translation.TranslationSegNet` (generator and segmenter).
        absent_data_loader: A batches ``{"image": (B', C, H, W)}``.
        discriminator_a: ``D_A``, ``(B, C, H, W)`` -> ``(B,)``, and with ``per_element=True`` a list of per-scale
            score maps (:class:`~common.networks.translation.MultiScaleDiscriminator`); directions "both" and
            "p_to_a" only.
        discriminator_p: ``D_P``; directions "both" only.
        d_optimizer: optimiser of the discriminators given.
        directions: one of :data:`DIRECTIONS`.
        lambda_adv, lambda_rec, lambda_cyc, lambda_lat, lambda_seg: relative loss weights (3, 50, 50, 1, 0.01).
        lambda_sum: scale the weights of the terms in use (adversarial and cycle only where the directions train
            them) to sum to this; None: use them as given.
        hinge_reduction: the discriminators' hinge on every element of their score maps (``"element"``, the
            authors' code) or on each image's averaged score (``"mean"``, this project before 0.2.0); the generator's
            term ``-mean(D)`` is the same either way.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: TranslationSegNet,
        optimizer: Optimizer,
        absent_data_loader: DataLoader,
        discriminator_a: torch.nn.Module | None = None,
        discriminator_p: torch.nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        directions: str = "both",
        lambda_adv: float = 3.0,
        lambda_rec: float = 50.0,
        lambda_cyc: float = 50.0,
        lambda_lat: float = 1.0,
        lambda_seg: float = 0.01,
        lambda_sum: float | None = None,
        hinge_reduction: str = "element",
        **trainer_kwargs: Any,
    ) -> None:
        if hinge_reduction not in HINGE_REDUCTIONS:
            raise ValueError(f"hinge_reduction must be one of {HINGE_REDUCTIONS}, got {hinge_reduction!r}.")
        if directions not in DIRECTIONS:
            raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}.")
        if absent_data_loader is None:
            raise ValueError("TranslationModelTrainer needs absent_data_loader.")
        needed = {"both": ("discriminator_a", "discriminator_p"), "p_to_a": ("discriminator_a",), "none": ()}
        given = {"discriminator_a": discriminator_a, "discriminator_p": discriminator_p}
        for name, module in given.items():
            if (module is None) == (name in needed[directions]):
                state = "needs" if module is None else "trains no"
                raise ValueError(f"directions {directions!r} {state} {name}.")
        if (d_optimizer is None) == bool(needed[directions]):
            state = "needs" if d_optimizer is None else "trains no discriminator and takes no"
            raise ValueError(f"directions {directions!r} {state} d_optimizer.")
        super().__init__(
            device, max_epochs, train_data_loader, network, optimizer, absent_data_loader, **trainer_kwargs
        )
        self.discriminator_a = discriminator_a
        self.discriminator_p = discriminator_p
        self.d_optimizer = d_optimizer
        self.directions = directions
        self.lambda_adv = lambda_adv
        self.lambda_rec = lambda_rec
        self.lambda_cyc = lambda_cyc
        self.lambda_lat = lambda_lat
        self.lambda_seg = lambda_seg
        self.lambda_sum = lambda_sum
        self.hinge_reduction = hinge_reduction
        self.weights = self._loss_weights()

    def _loss_weights(self) -> dict[str, float]:
        """Weight of each loss term of the generator / segmenter step (``lambda_sum`` applied)."""
        weights = {
            "loss_seg": self.lambda_seg,
            "loss_rec": self.lambda_rec,
            "loss_cyc": self.lambda_cyc,
            "loss_lat": self.lambda_lat,
            "loss_adv": self.lambda_adv,
        }
        if self.lambda_sum is None:
            return weights
        used = ["loss_seg", "loss_rec", "loss_lat"]
        used += ["loss_adv"] if self.directions != "none" else []
        used += ["loss_cyc"] if self.directions == "both" else []
        total = sum(weights[k] for k in used)
        if total <= 0:
            raise ValueError(f"lambda_sum: the weights of {used} sum to {total}; they must sum to more than 0.")
        return {k: v * self.lambda_sum / total for k, v in weights.items()}

    def _discriminators(self) -> list[torch.nn.Module]:
        return [d for d in (self.discriminator_a, self.discriminator_p) if d is not None]

    def _train_mode(self) -> None:
        """The generator trains; the discriminators are in training mode but frozen until their own step."""
        super()._train_mode()
        for d in self._discriminators():
            d.train()
            d.requires_grad_(False)

    def _terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return self._translation_terms(x_p, x_a, labels, mask)

    def _translation_terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Generator loss terms but the adversarial one (unweighted scalars), and the fakes ``{"x_pa", "x_ap"}``
        (those of the directions trained) for the discriminators."""
        net, size = self.network, x_p.shape[-2:]
        c_p, u_p, s_p = net.encode(x_p)
        c_a, u_a, s_a = net.encode(x_a)
        x_pa = net.healthy(c_p, s_p, size)
        x_pp = x_pa + net.residual(c_p, u_p, s_p, size)
        x_aa = net.healthy(c_a, s_a, size)
        c_pp, u_pp, _ = net.encode(x_pp)
        c_pa, _, _ = net.encode(x_pa)
        c_aa, _, _ = net.encode(x_aa)
        terms = {
            "loss_seg": self._segmentation_loss(c_p, u_p, s_p, labels, mask),
            "loss_rec": _l1(x_pp, x_p) + _l1(x_aa, x_a),
            "loss_lat": _l1(torch.cat([c_pp, u_pp], 1), torch.cat([c_p, u_p], 1)) + _l1(c_pa, c_p) + _l1(c_aa, c_a),
        }
        fakes = {"x_pa": x_pa} if self.directions in ("both", "p_to_a") else {}
        if self.directions == "both":
            z = torch.randn_like(u_a)
            x_ap = x_aa + net.residual(c_a, z, s_a, size)
            c_ap, u_ap, s_ap = net.encode(x_ap)
            terms["loss_cyc"] = _l1(net.healthy(c_ap, s_ap, size), x_a)
            terms["loss_lat"] = terms["loss_lat"] + _l1(torch.cat([c_ap, u_ap], 1), torch.cat([c_a, z], 1))
            fakes["x_ap"] = x_ap
        return terms, fakes

    def _adversarial_terms(self, fakes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss_adv": self._adversarial_term(fakes)} if self._discriminators() else {}

    def _adversarial_term(self, fakes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Generator hinge term ``-D_A(x_PA) [- D_P(x_AP)]`` (unweighted)."""
        loss = hinge_generator_loss(self.discriminator_a(fakes["x_pa"]))
        if self.discriminator_p is not None:
            loss = loss + hinge_generator_loss(self.discriminator_p(fakes["x_ap"]))
        return loss

    def _adversary_step(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, fakes: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {"loss_d": self._discriminator_step(x_p, x_a, fakes)} if self._discriminators() else {}

    def _discriminator_step(self, x_p: torch.Tensor, x_a: torch.Tensor, fakes: dict[str, torch.Tensor]) -> torch.Tensor:
        """One hinge step of the discriminators on real images and the detached fakes (unweighted, as the authors'
        ``bd_segmentation.py``); returns the loss."""
        discriminators = self._discriminators()
        for d in discriminators:
            d.requires_grad_(True)
        self.d_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        per_element = self.hinge_reduction == "element"
        d_a, d_p = self.discriminator_a, self.discriminator_p
        with self._autocast(), parametrize.cached():
            loss_d = hinge_discriminator_loss(d_a(x_a, per_element), d_a(fakes["x_pa"].detach(), per_element))
            if d_p is not None:
                loss_d = loss_d + hinge_discriminator_loss(
                    d_p(x_p, per_element), d_p(fakes["x_ap"].detach(), per_element)
                )
        self._step(loss_d, self.d_optimizer)
        for d in discriminators:
            d.requires_grad_(False)
        return loss_d
