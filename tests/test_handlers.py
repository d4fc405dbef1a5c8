"""Shared handlers: resumable checkpoints and picture panels."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from common.engines.utils import endless
from common.handlers import PanelSaver, ResumableCheckpoint, epoch_checkpoints, latest_checkpoint


def _item(foreground: bool) -> dict:
    label = torch.zeros(1, 8, 8)
    if foreground:
        label[0, 2:5, 2:5] = 1
    return {"image": torch.rand(1, 8, 8), "label": label, "pred": torch.rand(2, 8, 8)}


def test_panel_prefers_labelled_foreground(tmp_path: Path):
    batches = [[_item(False), _item(False)], [_item(True), _item(False)], [_item(True)]]
    engine = Engine(lambda e, batch: batch)
    saver = PanelSaver(str(tmp_path), num_samples=3)
    saver.attach(engine)
    engine.run(batches, max_epochs=1)
    assert [bool(r["label"].any()) for r in saver.rows] == [True, True]
    assert len(saver.empty_rows) == 3
    assert Image.open(tmp_path / "panel.png").size == (660, 660)  # 3 rows x 3 columns of 2.2 inch at 100 dpi


def _tiny_run(ckpt: Path, max_epochs: int = 3, stop: int | None = None, resume: bool = True) -> tuple[dict, list[int]]:
    """A seeded Ignite training whose every step draws random numbers: the loader's shuffle, dropout, a NumPy noise
    generator the trainer holds, Python's ``random``, and an unlabelled loader drawn endlessly (3 batches a pass, 2
    drawn an epoch). Stopped after epoch ``stop`` (``None``: runs on) and resumed from ``ckpt`` if it holds a
    checkpoint. Returns the state dicts of the network, optimiser and scheduler, and the epochs this run trained."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    labelled = DataLoader(TensorDataset(torch.randn(6, 2)), batch_size=3, shuffle=True)
    unlabelled = DataLoader(TensorDataset(torch.randn(9, 2)), batch_size=3, shuffle=True)

    def step(engine: Engine, batch: list[torch.Tensor]) -> float:
        opt.zero_grad()
        x = batch[0] + torch.from_numpy(engine.rng.normal(size=2)).float() * random.random()
        loss = net(x).pow(2).mean() + net(next(engine.unlabelled)[0]).mean()
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)
    engine.rng = np.random.RandomState(1)
    engine.unlabelled = endless(unlabelled)
    saved = {"network": net, "optimizer": opt, "scheduler": scheduler}
    ResumableCheckpoint(str(ckpt), saved, n_saved=1, resume=resume).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())
    trained: list[int] = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: trained.append(e.state.epoch))
    if stop is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop), lambda e: e.terminate())
    engine.run(labelled, max_epochs=max_epochs)
    return {"network": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, trained


def _same(a: object, b: object) -> bool:
    """Nested state dicts equal: tensors by ``torch.equal`` (and dtype), everything else by ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_resumable_checkpoint_saves_prunes_and_resumes_exactly(tmp_path: Path):
    """Stopped after epoch 2 and rerun, the run trains epoch 3 only and ends bit-identical to an uninterrupted one;
    one checkpoint is kept. (The bundles' trainers: ``test_resume_exact.py``.)"""
    uninterrupted, trained = _tiny_run(tmp_path / "uninterrupted")
    assert trained == [1, 2, 3]
    _, first = _tiny_run(tmp_path / "resumed", stop=2)
    assert first == [1, 2]
    assert [p.name for p in epoch_checkpoints(tmp_path / "resumed")] == ["checkpoint_epoch=2.pt"]
    resumed, second = _tiny_run(tmp_path / "resumed")
    assert second == [3]
    assert [p.name for p in epoch_checkpoints(tmp_path / "resumed")] == ["checkpoint_epoch=3.pt"]
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint_epoch=3.pt"
    for key in uninterrupted:
        assert _same(uninterrupted[key], resumed[key]), key


def test_a_new_run_replaces_an_older_runs_checkpoints(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """``resume`` false with an older run's later checkpoint in the folder (a 5-epoch command-line run, then a
    training through MONAI Label): the new run trains from epoch 1, removes the old file (a later resume would continue
    the old run, and pruning by epoch used to delete the new run's own checkpoint, then crash at the next epoch) and
    ends bit-identical to a run in an empty folder."""
    reference, _ = _tiny_run(tmp_path / "empty", resume=False)
    _tiny_run(tmp_path / "used", max_epochs=5)
    assert [p.name for p in epoch_checkpoints(tmp_path / "used")] == ["checkpoint_epoch=5.pt"]
    with caplog.at_level(logging.INFO, logger="common.handlers.resume"):
        new, trained = _tiny_run(tmp_path / "used", resume=False)
    assert trained == [1, 2, 3]
    assert [p.name for p in epoch_checkpoints(tmp_path / "used")] == ["checkpoint_epoch=3.pt"]
    assert sum("removing the older run's checkpoint_epoch=5.pt" in r.getMessage() for r in caplog.records) == 1
    for key in reference:
        assert _same(reference[key], new[key]), key


def test_checkpoint_without_random_states_still_resumes(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A checkpoint written before the random states were saved loads: the run continues at the next epoch, with one
    warning that it draws other random numbers than an uninterrupted run would."""
    _tiny_run(tmp_path, stop=1)
    path = tmp_path / "checkpoint_epoch=1.pt"
    old = {k: v for k, v in torch.load(path, weights_only=True).items() if k in ("network", "optimizer", "trainer")}
    torch.save({**old, "scheduler": torch.load(path, weights_only=True)["scheduler"]}, path)
    with caplog.at_level(logging.WARNING, logger="common.handlers.resume"):
        _, trained = _tiny_run(tmp_path)
    assert trained == [2, 3]
    warnings = [r for r in caplog.records if r.name == "common.handlers.resume" and r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1 and "holds no iterator_main, iterator_unlabelled, random_states" in warnings[0].getMessage()
    )


def test_endless_state_replays_its_pass():
    """``Endless.load_state_dict`` puts a fresh pass over a shuffled loader where the saved one was, with the same
    shuffle order, and leaves the global random state as it found it."""
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=2, shuffle=True)
    first = endless(loader)
    drawn = [next(first)[0] for _ in range(7)]  # a whole pass (5 batches), then 2 of the next
    state = first.state_dict()
    ahead = [next(first)[0] for _ in range(5)]
    rng_before = torch.get_rng_state()
    second = endless(loader)
    second.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert state["position"] == 2 and len(drawn) == 7
    again = [next(second)[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(again, ahead[:3]))


def test_codec_warning_once_per_process(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Every ``LoadImage`` logs MONAI's nvImageCodec warning where the codec is missing; the console shows it once:
    exactly one record for five ``LoadImage`` (none where the codec is there), and one of each other message."""
    import monai.data.nvimgcodec_pydicom_plugin as plugin
    from monai.transforms import LoadImage

    import common  # noqa: F401  (installs the filter)
    from common.console import REPEATING_LOGGERS, OnceFilter

    logger = logging.getLogger(plugin.__name__)
    assert plugin.__name__ in REPEATING_LOGGERS
    assert [type(f) for f in logger.filters] == [OnceFilter]
    monkeypatch.setattr(logger, "filters", [OnceFilter()])  # a fresh filter: earlier tests may have logged it already
    expected = 0 if plugin.is_nvimgcodec_available() else 1
    with caplog.at_level("WARNING"):
        for _ in range(5):
            LoadImage(image_only=True)
        for _ in range(3):
            logger.warning("another message")
    codec = [r for r in caplog.records if "nvImageCodec is not available" in r.getMessage()]
    other = [r for r in caplog.records if r.getMessage() == "another message"]
    assert (len(codec), len(other)) == (expected, 1)
