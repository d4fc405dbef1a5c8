"""Shared handlers: resumable checkpoints and picture panels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from PIL import Image

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


def test_resumable_checkpoint_saves_prunes_and_resumes(tmp_path: Path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        loss = net(batch).sum()
        loss.backward()
        opt.step()
        return loss.item()

    data = [torch.ones(1, 2)] * 3
    first = Engine(step)
    ResumableCheckpoint(str(tmp_path), {"network": net, "optimizer": opt}, n_saved=1).attach(first)
    first.run(data, max_epochs=2)
    assert [p.name for p in epoch_checkpoints(tmp_path)] == ["checkpoint_epoch=2.pt"]
    weights = net.weight.detach().clone()
    second = Engine(step)
    ResumableCheckpoint(str(tmp_path), {"network": net, "optimizer": opt}, n_saved=1).attach(second)
    torch.nn.init.zeros_(net.weight)  # the checkpoint must bring the trained weights back
    second.run(data, max_epochs=3)
    assert second.state.epoch == 3 and second.state.iteration == 9
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch=3.pt"
    assert len(epoch_checkpoints(tmp_path)) == 1
    assert not torch.equal(net.weight.detach(), torch.zeros_like(weights))


def test_codec_warning_once_per_process(caplog: pytest.LogCaptureFixture):
    """Every ``LoadImage`` logs MONAI's nvImageCodec warning where the codec is missing; the console shows it once."""
    from monai.transforms import LoadImage

    import common  # noqa: F401  (installs the filter)

    with caplog.at_level("WARNING"):
        for _ in range(5):
            LoadImage(image_only=True)
    assert len([r for r in caplog.records if "nvImageCodec is not available" in r.getMessage()]) <= 1
