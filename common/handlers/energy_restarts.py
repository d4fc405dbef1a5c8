"""Restarts of a label-free ACWE training: short starts from different initialisations, the one of lowest energy kept.

On volumes whose object fills a minority of the slices (issue 34) the Chan-Vese energy that
:class:`common.losses.acwe.ACWELoss` minimises has a second, worse minimum: the partition of the background's slow
intensity drift into a darker and a brighter half, with the object inside the brighter one (a two-phase split of
three intensity levels; a k-means / ISODATA iteration started on the wrong side stays there too). A network whose
first epoch falls into it stays there (on the ``sparse_stack`` benchmark task 2 seeds of 5, Dice 0; its energy per
voxel 0.013 against 0.0056 for the nuclei), so the energy itself tells the two apart. :class:`EnergyRestartHandler`
therefore trains ``num_restarts + 1`` candidates for ``restart_epochs`` epochs each (the first from the network's
own initialisation, the others from fresh initialisations drawn from ``(seed, k)``, each with a fresh optimiser state
and fresh running volume statistics), computes the energy of each candidate's partition over **all** training
images, and lets the rest of the run continue the candidate of lowest energy. No label is read; the steps of the
candidates are steps of the run (the trainer's schedule is not lengthened).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.inferers import SlidingWindowInferer

from common.data.slices import has_volumes

__all__ = ["EnergyRestartHandler", "partition_energy"]

logger = logging.getLogger(__name__)


def partition_energy(sums: np.ndarray, nu: float, lambda1: float = 1.0, lambda2: float = 1.0) -> float:
    """Chan-Vese energy (mu = 0) of one region of the domain from its sums.

    sums: ``(7, C)`` float64 rows ``Σ p g``, ``Σ p g²``, ``Σ p``, ``Σ (1-p) g``, ``Σ (1-p) g²``, ``Σ (1-p)`` per channel
    and ``Σ p`` of the single-channel ``p`` (broadcast over the channels; its first entry is used). Returns
    ``λ1 Σ p (g - c1)² + λ2 Σ (1-p) (g - c2)² + ν Σ p`` with ``c1, c2`` the region's means, the form
    :class:`common.losses.acwe.ACWELoss` sums over channels.
    """
    pg, pg2, p, qg, qg2, q, area = sums
    inside = pg2 - pg**2 / np.maximum(p, 1e-12)
    outside = qg2 - qg**2 / np.maximum(q, 1e-12)
    return float(lambda1 * inside.sum() + lambda2 * outside.sum() + nu * area[0])


class EnergyRestartHandler:
    """Train ``num_restarts + 1`` short candidates, continue the one whose partition of the training images has the
    lowest ACWE energy (see the module docstring). Active on volumes only (training items with several slices of one
    ``source``); on 2D images it does nothing, so their training is unchanged.

    The candidates take the first ``(num_restarts + 1) * restart_epochs`` epochs of the run, fewer if the run is
    short (at least one epoch stays for the chosen candidate; with room for fewer than two candidates there is no
    restart). At the end of candidate ``k``'s last epoch its network is put in evaluation mode and run over ``data``
    (``transform`` applied, e.g. the validation preprocessing: whole images, no crop), ``p = clamp(output, 0, 1)``,
    and the energy of the partition is summed per region as the loss defines it: per volume with the loss's
    ``region_statistics="volume"`` (``c1, c2`` of a volume), per image otherwise; the energy per pixel over all
    items is logged and compared. The best candidate's network, optimiser and loss states are kept (copies) and
    restored when the last candidate is done. The foreground-phase decision of ``phase_handler``
    (:class:`common.handlers.ForegroundPhaseHandler`) is moved behind the candidates (its ``decide_epoch`` counts
    from the end of the last candidate), so it is taken on the chosen network. The handler's state (``state_dict``)
    belongs in the epoch checkpoint (``save_dict`` entry ``optional_restarts``), so a resumed run chooses as an
    uninterrupted one. Under DDP rank 0's choice holds for every rank.

    Args:
        network: the trained module (not its DDP wrapper), whose parameters are re-initialised with
            ``reset_parameters`` of its submodules.
        optimizer: its optimiser (state cleared for each new candidate).
        loss: :class:`common.losses.acwe.ActiveContourCombinedLoss` or :class:`common.losses.acwe.ACWELoss` (its
            ``nu``, ``lambda1``, ``lambda2``, ``region_statistics``; its running volume sums are reset per candidate).
        data: the training items (``image``, ``source``, ``slice``); no label is read.
        transform: applied to each item before the energy is taken.
        num_restarts: further starts after the first (0: none).
        restart_epochs: epochs per candidate.
        seed: the run's seed; candidate ``k`` is initialised from ``(seed, k)``.
        roi_size: window of the sliding-window inferer used for the energy (``None``: whole images).
        phase_handler: the foreground-phase handler whose decision waits for the chosen candidate, or ``None``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss: torch.nn.Module,
        data: Sequence[Mapping],
        transform: Callable | None = None,
        num_restarts: int = 3,
        restart_epochs: int = 1,
        seed: int = 0,
        roi_size: Sequence[int] | None = None,
        phase_handler: object | None = None,
    ) -> None:
        if num_restarts < 0 or restart_epochs < 1:
            raise ValueError(f"need num_restarts >= 0 and restart_epochs >= 1, got {num_restarts}, {restart_epochs}.")
        self.network = network
        self.optimizer = optimizer
        self.loss = loss
        self.acwe = getattr(loss, "acwe", loss)
        self.data = list(data)
        self.transform = transform
        self.num_restarts = num_restarts
        self.restart_epochs = restart_epochs
        self.seed = seed
        self.roi_size = list(roi_size) if roi_size is not None else None
        self.phase_handler = phase_handler
        self.candidates = 0  # decided when the run starts (0 or 1: inactive)
        self.energies: list[float] = []
        self.best: dict | None = None  # {"index", "energy", "network", "optimizer", "loss"}
        self._phase_epoch: int | None = None

    # ------------------------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def state_dict(self) -> dict:
        """Energies so far and the best candidate's states (for the epoch checkpoint)."""
        return {"energies": list(self.energies), "best": self.best}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.energies = [float(e) for e in state.get("energies", [])]
        self.best = state.get("best")

    @property
    def window_epochs(self) -> int:
        """Epochs taken by the candidates (0 when inactive)."""
        return self.candidates * self.restart_epochs if self.candidates > 1 else 0

    def _start(self, engine: Engine) -> None:
        max_epochs = int(engine.state.max_epochs or 0)
        room = max(max_epochs - 1, 0) // self.restart_epochs  # candidates that leave >= 1 epoch to the chosen one
        active = self.num_restarts > 0 and has_volumes(self.data)
        self.candidates = min(self.num_restarts + 1, room) if active else 0
        if active and self.candidates < 2:
            logger.warning(f"energy restarts: {max_epochs} epochs leave no room for a restart; none made.")
        if self.phase_handler is not None and hasattr(self.phase_handler, "decide_epoch"):
            if self._phase_epoch is None:
                self._phase_epoch = int(self.phase_handler.decide_epoch)
            self.phase_handler.decide_epoch = self._phase_epoch + self.window_epochs
        if self.window_epochs:
            logger.info(
                f"energy restarts: {self.candidates} candidates of {self.restart_epochs} epoch(s) each; the one of "
                "lowest ACWE energy on the training images continues."
            )

    def _epoch_completed(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if not self.window_epochs or epoch > self.window_epochs or epoch % self.restart_epochs:
            return
        index = epoch // self.restart_epochs - 1
        energy = self.energy()
        self.energies = self.energies[:index] + [energy]
        better = self.best is None or energy < self.best["energy"]
        if idist.get_world_size() > 1:  # rank 0 decides for all ranks
            better = bool(idist.broadcast(torch.tensor(int(better), device=self._device()), src=0))
        if better:
            self.best = {
                "index": index,
                "energy": energy,
                "network": {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "loss": copy.deepcopy(self.loss.state_dict()),
            }
        logger.info(f"energy restarts: candidate {index + 1}/{self.candidates}: ACWE energy per pixel {energy:.6f}")
        if index + 1 < self.candidates:
            self._reinitialise(index + 1)
            return
        best = self.best
        self.network.load_state_dict(best["network"])
        self.optimizer.load_state_dict(best["optimizer"])
        self.loss.load_state_dict(best["loss"])
        listed = ", ".join(f"{e:.6f}" for e in self.energies)
        logger.info(
            f"energy restarts: candidate {best['index'] + 1} of {self.candidates} continues (energies per pixel "
            f"{listed})."
        )

    # ------------------------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _reinitialise(self, index: int) -> None:
        """Candidate ``index``: fresh parameters from ``(seed, index)``, fresh optimiser state and loss sums; the
        run's random generators are left as they were."""
        device = self._device()
        cuda = []
        if device.type == "cuda":
            cuda = [device.index if device.index is not None else torch.cuda.current_device()]
        state = int(np.random.SeedSequence([int(self.seed), int(index)]).generate_state(1)[0])
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(state)
            for module in self.network.modules():
                if module is not self.network and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.optimizer.state.clear()
        for module in self.loss.modules():
            if hasattr(module, "reset_volume_statistics"):
                module.reset_volume_statistics()

    @torch.no_grad()
    def energy(self) -> float:
        """ACWE energy per pixel of the network's partition of ``data`` (see the class docstring)."""
        device, was_training = self._device(), self.network.training
        per_volume = bool(getattr(self.acwe, "region_statistics", "image") == "volume")
        inferer = SlidingWindowInferer(self.roi_size, sw_batch_size=4) if self.roi_size else None
        loader = DataLoader(Dataset(self.data, self.transform), batch_size=1, shuffle=False, num_workers=0)
        sums: dict[str, np.ndarray] = {}
        pixels = 0
        self.network.eval()
        try:
            for k, batch in enumerate(loader):
                image = torch.as_tensor(batch["image"]).float().to(device)
                pred = inferer(image, self.network) if inferer is not None else self.network(image)
                p, g = pred.clamp(0.0, 1.0).double(), image.double()
                row = (
                    torch.stack(
                        [
                            (p * g).sum((0, 2, 3)),
                            (p * g * g).sum((0, 2, 3)),
                            p.sum().expand(g.shape[1]),
                            ((1 - p) * g).sum((0, 2, 3)),
                            ((1 - p) * g * g).sum((0, 2, 3)),
                            (1 - p).sum().expand(g.shape[1]),
                            p.sum().expand(g.shape[1]),
                        ]
                    )
                    .cpu()
                    .numpy()
                )
                source = batch.get("source")
                key = str(source[0]) if per_volume and source is not None and source[0] else f"#{k}"
                sums[key] = sums.get(key, 0.0) + row
                pixels += int(np.prod(g.shape[2:]))
        finally:
            self.network.train(was_training)
        nu, l1, l2 = float(self.acwe.nu), float(self.acwe.lambda1), float(self.acwe.lambda2)
        total = sum(partition_energy(s, nu, l1, l2) for s in sums.values())
        return total / max(pixels, 1)
