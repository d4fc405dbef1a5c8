"""What explains a semi-supervised method that does not gain: its pseudo-labels measured against the hidden truth.

Benchmark runs only, and after training: a run's training never reads the labels of its unlabelled images
(:mod:`common.benchmark.protocol`). Once a run on a built-in task has trained and been tested, the benchmark writes a
third datalist, ``datalist_truth.json``, of up to :data:`TRUTH_CASES` of the run's unlabelled pool cases *with*
their labels, and evaluates the run's last network on them in another process (the bundle's ``evaluate.json``) with
:class:`ConfidentPixelTally` attached: of the pixels whose top softmax probability reaches the method's threshold
(those that get a pseudo-label; UniMatch's ``semi_threshold``, 0.95), the share, and how many carry the true class.
The network sees each image as the evaluation does (no augmentation): UniMatch's weak view without its flip and
rotation. User folders are not diagnosed (their unlabelled images may have no label at all).
"""

from __future__ import annotations

from typing import Any

import torch

TRUTH_CASES = 200  # unlabelled pool cases scored per run (drawn once, seed 0)
THRESHOLD_KEYS = {"unimatch_semi_seg": "semi_threshold"}  # bundle -> its confidence threshold's config key


class ConfidentPixelTally:
    """Ignite handler on an evaluator whose output items hold ``prob`` (``(C, *spatial)`` softmax) and ``label``
    (``(C, *spatial)`` one-hot): counts, over every pixel it sees, those whose top probability is at least
    ``threshold`` (confident), those of them whose argmax is the label's class (correct), and the same for the
    confident pixels whose argmax is a foreground class (class > 0)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        names = ("pixels", "confident", "correct", "foreground", "foreground_correct", "truth_foreground", "images")
        self.counts = {k: 0 for k in names}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        for item in engine.state.output:
            self.add(item["prob"], item["label"])

    def add(self, prob: torch.Tensor, label: torch.Tensor) -> None:
        """One image: ``prob`` and one-hot ``label``, both ``(C, *spatial)``."""
        confidence, pseudo = torch.as_tensor(prob).float().max(dim=0)
        truth = torch.as_tensor(label).argmax(dim=0)
        confident = confidence >= self.threshold
        foreground = confident & (pseudo > 0)
        right = pseudo == truth
        self.counts["pixels"] += int(confidence.numel())
        self.counts["confident"] += int(confident.sum())
        self.counts["correct"] += int((confident & right).sum())
        self.counts["foreground"] += int(foreground.sum())
        self.counts["foreground_correct"] += int((foreground & right).sum())
        self.counts["truth_foreground"] += int((truth > 0).sum())
        self.counts["images"] += 1

    def result(self) -> dict[str, Any]:
        """``threshold``, ``images``, ``coverage`` (confident / pixels), ``precision`` (correct / confident),
        ``foreground_share`` (confident foreground / confident), ``foreground_precision``, ``truth_foreground``
        (truly foreground / pixels); ``None`` where a share has nothing to divide."""
        c = self.counts

        def share(a: str, b: str) -> float | None:
            return round(c[a] / c[b], 4) if c[b] else None

        return {
            "threshold": self.threshold,
            "images": c["images"],
            "coverage": share("confident", "pixels"),
            "precision": share("correct", "confident"),
            "foreground_share": share("foreground", "confident"),
            "foreground_precision": share("foreground_correct", "foreground"),
            "truth_foreground": share("truth_foreground", "pixels"),
        }


def diagnose_run(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: the run's last network on ``<run>/datalist_truth.json`` with a :class:`ConfidentPixelTally` at
    the bundle's threshold; returns ``{"pseudo_labels": tally.result()}``."""
    import logging

    from .runner import evaluation_workflow, run_overrides

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    overrides = run_overrides(spec)
    workflow = evaluation_workflow(spec, overrides, "datalist_truth.json", "truth")
    workflow.initialize()
    threshold = float(workflow.parser.get_parsed_content(THRESHOLD_KEYS[spec["bundle"]]))
    tally = ConfidentPixelTally(threshold)
    tally.attach(workflow.parser.get_parsed_content("validate#evaluator"))
    workflow.run()
    workflow.finalize()
    return {"pseudo_labels": tally.result()}
