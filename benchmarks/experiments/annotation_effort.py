"""How much correction the annotation loop saves, measured over HTTP with a data set's true masks as the annotator.

    python benchmarks/experiments/annotation_effort.py [--images 24] [--image-size 64] [--rounds 6] [--seeds 0 1]
        [--strategies random epistemic] [--starts label_free none] [--epochs 3] [--epoch-length 10]
        [--label-free acwe_unsup_seg] [--label-free-epochs 30] [--out outputs/annotation_effort]
        [--png docs/annotation_effort.png] [--quick]

Each arm starts ``monailabel_app/`` (monailabel 0.8.5 from its own environment, as the tests and
benchmarks/monailabel_load.py do, with common/monailabel_harness.py's ``AppServer``, ``prepare_app_root`` and
``server_env``) on 127.0.0.1 in a fresh temporary folder: copies of the bundles with their untrained networks'
weights (nothing is written into ``bundles/``) and a studies folder of ``--images`` synthetic ``cells_hard`` images
(``common.data.demo``, seed 0, ``--image-size`` px; the same images for every arm) whose true masks are kept aside.
Arms: strategy x start x seed,

- strategy ``random``: the next image drawn uniformly from the images without a final label by a generator seeded
  with the arm's seed (MONAI Label's own ``/activelearning/random`` cannot be seeded from outside), so both starts of
  a seed annotate the same images in the same order; ``epistemic``: MC-dropout scoring of the unlabelled images with
  the current ``adversarial_semi_seg`` weights (``POST /scoring/epistemic``), then ``POST /activelearning/epistemic``
  (most uncertain first);
- start ``label_free``: ``--label-free`` (``acwe_unsup_seg`` or ``af_seg``) is first trained through the server with
  no label at all and its masks are the round-1 pre-annotations (trained once per seed, in the first label-free arm;
  the other label-free arm of that seed is served the same weights, so both strategies start from one model);
  ``none``: the round-1 pre-annotation is empty (the annotator draws every nucleus).

Round k = 1..R: the current model (round 1: the start's; later: ``adversarial_semi_seg`` as last retrained)
pre-annotates every image without a final label (``POST /batch/infer/<model>?images=unlabeled``, masks read back
with ``GET /datastore/label?tag=original``); the mean Dice of those pre-annotations against the true masks is the
round's pool Dice; the next image is chosen by the strategy; its pre-annotation's Dice and the pixels the annotator
has to change (``pre != truth``) are recorded; its true mask is submitted as its final label (``PUT
/datastore/label?tag=final``); ``adversarial_semi_seg`` is retrained through the server on the final labels and every
unlabelled image (``--epochs`` epochs of ``--epoch-length`` iterations, the same for every arm and round, fine-tuned
from the current weights; ``val_split`` 0, so every final label trains). After round R the last model's pool Dice on
the images never annotated is recorded too.

Every step is over HTTP: with ``val_split`` 0 the app's train task has ``adversarial_semi_seg`` skip its (empty)
validation and write its network at the end of each training to ``models/model.pt`` (``select_by_key_metric``
false), the file the app serves next round. The untrained networks' weights each arm starts from are drawn after
``torch.manual_seed(seed)`` with the arm's seed, so the strategies and starts of one seed start from the same weights.

Written to ``--out``: ``annotation_effort.json`` (every round of every arm, the settings, the machine, the command)
and ``annotation_effort.md`` (per arm, mean ± sd over seeds: pixels corrected in total after R images, that total
against drawing the same images from scratch, the served pre-annotation's Dice and the pool Dice per round); ``--png``
gets the plot (cumulative pixels corrected against images annotated, one line per arm, and the pool Dice per round).
``--quick`` is a smoke run (6 images, 2 rounds, 1 epoch, seed 0).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.monailabel_harness import (  # noqa: E402
    SERVER_PYTHON,
    SETUP_HINT,
    AppServer,
    free_port,
    prepare_app_root,
    server_env,
)

SEMI = "adversarial_semi_seg"  # retrained every round; its U-Net takes a dropout rate (epistemic scoring)
LABEL_FREE_BUNDLES = ("acwe_unsup_seg", "af_seg")
STRATEGIES = ("random", "epistemic")
STARTS = ("label_free", "none")
FOREGROUND = 1  # cells_hard: 0 background, 1 nucleus
QUICK = {"images": 6, "rounds": 2, "epochs": 1, "epoch_length": 2, "label_free_epochs": 1, "seeds": [0]}


@dataclass(frozen=True)
class Settings:
    """What every arm shares: the data, the rounds, the trainings and the server's settings."""

    images: int = 24
    image_size: int = 64
    rounds: int = 6
    epochs: int = 3
    epoch_length: int = 10
    batch_size: int = 4
    unlabeled_batch_size: int = 4
    label_free: str = "acwe_unsup_seg"
    label_free_epochs: int = 30
    simulation_size: int = 5
    device: str = "cpu"
    threads: int = 1


@dataclass(frozen=True)
class Arm:
    """One run of the loop: a next-image strategy, a start, and a seed (random draws; the label-free training)."""

    strategy: str
    start: str
    seed: int

    @property
    def name(self) -> str:
        """The arm without its seed, as the table and the plot name it."""
        return f"{self.strategy}, start {self.start.replace('_', '-')}"

    @property
    def slug(self) -> str:
        """A folder name for the arm."""
        return f"{self.strategy}_{self.start}_seed{self.seed}"


def arms_plan(strategies: Sequence[str], starts: Sequence[str], seeds: Sequence[int]) -> list[Arm]:
    """The arms in run order: by seed, the label-free start first (its first arm trains the label-free model that the
    seed's other label-free arms reuse), then by strategy. Raises ``ValueError`` for an unknown name."""
    unknown = [s for s in strategies if s not in STRATEGIES] + [s for s in starts if s not in STARTS]
    if unknown or not strategies or not starts or not seeds:
        raise ValueError(f"unknown or missing strategies/starts {unknown}; choose from {STRATEGIES} and {STARTS}")
    ordered_starts = sorted(dict.fromkeys(starts), key=STARTS.index)
    return [
        Arm(st, sa, seed) for seed in dict.fromkeys(seeds) for sa in ordered_starts for st in dict.fromkeys(strategies)
    ]


def pixels_changed(pre: np.ndarray, truth: np.ndarray) -> int:
    """Pixels whose label the annotator has to change: where the pre-annotation differs from the true mask."""
    if pre.shape != truth.shape:
        raise ValueError(f"pre-annotation shape {pre.shape} differs from the mask's {truth.shape}")
    return int(np.count_nonzero(np.asarray(pre) != np.asarray(truth)))


def dice(pre: np.ndarray, truth: np.ndarray, label: int = FOREGROUND) -> float:
    """Dice of class ``label`` between a pre-annotation and the true mask (1 when both lack it)."""
    p, t = np.asarray(pre) == label, np.asarray(truth) == label
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, t).sum()) / total


def pick_random(unlabelled: Sequence[str], rng: np.random.Generator) -> str:
    """The next image drawn uniformly from ``unlabelled`` (sorted first, so the draw depends on the set only)."""
    if not unlabelled:
        raise ValueError("no unlabelled image left")
    ordered = sorted(unlabelled)
    return ordered[int(rng.integers(len(ordered)))]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = float(statistics.fmean(values))
    return mean, float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarise(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per arm (over its seeds; arms that failed are left out): cumulative pixels corrected after each round, the
    same for drawing the annotated images from scratch (their foreground pixels), the served pre-annotation's Dice
    and the pool Dice per round (mean and sd over seeds), and the pool Dice after the last training."""
    names: dict[str, list[Mapping[str, Any]]] = {}
    for result in results:
        if result.get("status") == "ok":
            names.setdefault(result["arm"], []).append(result)
    rows = []
    for name, runs in names.items():
        rounds = min(len(r["rounds"]) for r in runs)
        cumulative = [np.cumsum([x["pixels_changed"] for x in r["rounds"][:rounds]]) for r in runs]
        scratch = [np.cumsum([x["truth_pixels"] for x in r["rounds"][:rounds]]) for r in runs]

        def per_round(key: str) -> list[tuple[float, float]]:
            return [_mean_sd([r["rounds"][k][key] for r in runs]) for k in range(rounds)]

        final = [r["final_pool_dice"] for r in runs if r.get("final_pool_dice") is not None]
        rows.append(
            {
                "arm": name,
                "strategy": runs[0]["strategy"],
                "start": runs[0]["start"],
                "seeds": [r["seed"] for r in runs],
                "rounds": rounds,
                "cumulative_pixels": [_mean_sd([float(c[k]) for c in cumulative]) for k in range(rounds)],
                "scratch_pixels": [_mean_sd([float(s[k]) for s in scratch]) for k in range(rounds)],
                "share_of_scratch": _mean_sd(
                    [float(c[-1] / s[-1]) if s[-1] else 0.0 for c, s in zip(cumulative, scratch)]
                ),
                "served_dice": per_round("dice"),
                "pool_dice": per_round("pool_dice"),
                "final_pool_dice": _mean_sd(final) if final else None,
            }
        )
    order = {(st, sa): i for i, (st, sa) in enumerate((st, sa) for sa in STARTS for st in STRATEGIES)}
    return sorted(rows, key=lambda r: order.get((r["strategy"], r["start"]), len(order)))


# paired contrasts: (arm, against), each as (strategy, start); uncertainty against random at each start, then the
# label-free start against none at each strategy
CONTRASTS = (
    (("epistemic", "label_free"), ("random", "label_free")),
    (("epistemic", "none"), ("random", "none")),
    (("random", "label_free"), ("random", "none")),
    (("epistemic", "label_free"), ("epistemic", "none")),
)


def contrasts(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each pair of :data:`CONTRASTS` over the seeds both arms finished, paired by seed: the total pixels corrected
    and the pool Dice after the last round, as the mean paired difference (arm - against) with its 95 % interval
    (``common.metrics.results.paired_difference``). Pairs with no common seed are left out."""
    from common.metrics.results import paired_difference

    ok = {(r["strategy"], r["start"], r["seed"]): r for r in results if r.get("status") == "ok"}
    rows = []
    for mine, theirs in CONTRASTS:
        seeds = sorted({seed for (*_, seed) in ok if (*mine, seed) in ok and (*theirs, seed) in ok})
        if not seeds:
            continue
        a, b = [ok[(*mine, s)] for s in seeds], [ok[(*theirs, s)] for s in seeds]
        rounds = min(len(r["rounds"]) for r in a + b)

        def total(r: Mapping[str, Any]) -> float:
            return float(sum(x["pixels_changed"] for x in r["rounds"][:rounds]))

        finals = [(x.get("final_pool_dice"), y.get("final_pool_dice")) for x, y in zip(a, b)]
        finals = [(x, y) for x, y in finals if x is not None and y is not None]
        rows.append(
            {
                "arm": Arm(*mine, 0).name,
                "against": Arm(*theirs, 0).name,
                "seeds": seeds,
                "rounds": rounds,
                "pixels": paired_difference([total(r) for r in a], [total(r) for r in b]),
                "final_pool_dice": paired_difference([x for x, _ in finals], [y for _, y in finals]),
            }
        )
    return rows


def _interval(diff: Any, digits: int) -> str:
    """A ``PairedDifference`` as ``mean [lo, hi]`` (``PairedDifference.interval_text``: ``-`` without an interval)."""
    return "n/a" if diff.n == 0 else f"{diff.mean:+.{digits}f} {diff.interval_text(digits)}"


def _pm(value: tuple[float, float] | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def markdown(record: Mapping[str, Any]) -> str:
    """The summary as markdown: one row per arm, then the settings, the machine and the command."""
    settings = record["settings"]
    rows = summarise(record["results"])
    rounds = max((r["rounds"] for r in rows), default=settings["rounds"])
    image_pixels = settings["image_size"] ** 2
    lines = [
        f"| arm | seeds | pixels corrected after {rounds} images | share of drawing them from scratch "
        f"| Dice of the served pre-annotation, rounds 1-{rounds} | pool Dice, rounds 1-{rounds} "
        f"| pool Dice after round {rounds} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        served = " / ".join(f"{m:.2f}" for m, _ in row["served_dice"])
        pool = " / ".join(f"{m:.2f}" for m, _ in row["pool_dice"])
        lines.append(
            f"| {row['arm']} | {len(row['seeds'])} | {_pm(row['cumulative_pixels'][-1], 0)} "
            f"| {_pm(row['share_of_scratch'])} | {served} | {pool} | {_pm(row['final_pool_dice'])} |"
        )
    paired = contrasts(record["results"])
    if paired:
        lines += [
            "",
            "Paired by seed (arm - against; a 95 % interval that holds 0 is no difference):",
            "",
            "| arm | against | seeds | Δ pixels corrected (95 % CI) | Δ pool Dice after the last round (95 % CI) |",
            "|---|---|---|---|---|",
        ]
        for c in paired:
            lines.append(
                f"| {c['arm']} | {c['against']} | {len(c['seeds'])} | {_interval(c['pixels'], 0)} "
                f"| {_interval(c['final_pool_dice'], 3)} |"
            )
    failed = [r for r in record["results"] if r.get("status") != "ok"]
    lines += [
        "",
        f"Images: {settings['images']} synthetic cells_hard images of {settings['image_size']} x "
        f"{settings['image_size']} px ({image_pixels} pixels each); {rounds} rounds. Pixels corrected: pixels where "
        "the served pre-annotation differs from the true mask, summed over the annotated images (mean ± sd over "
        "seeds); "
        "from scratch: the true masks' foreground pixels of the same images. Pool Dice: mean nucleus Dice of the "
        "current model's pre-annotations on every image not yet annotated, at the start of each round. Retraining: "
        f"{SEMI}, {settings['epochs']} epoch(s) of {settings['epoch_length']} iterations per round (batch "
        f"{settings['batch_size']} labelled + {settings['unlabeled_batch_size']} unlabelled), fine-tuned from the "
        f"current weights; label-free start: {settings['label_free']}, {settings['label_free_epochs']} epoch(s), no "
        f"label. MC dropout: {settings['simulation_size']} passes.",
        "",
        f"Machine: {record['machine']['text']}. Wall time: {record['wall_s'] / 60:.1f} min.",
        "",
        f"Command: `{record['command']}`",
    ]
    if failed:
        lines += ["", "Failed arms: " + "; ".join(f"{r['slug']}: {r.get('error', '')[:200]}" for r in failed)]
    return "\n".join(lines) + "\n"


def plot(record: Mapping[str, Any], path: Path) -> None:
    """Left: cumulative pixels corrected against images annotated, one line per arm (mean over seeds, band: sd),
    with drawing from scratch dashed. Right: the pool Dice at the start of each round and after the last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarise(record["results"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, row in enumerate(rows):
        x = np.arange(1, row["rounds"] + 1)
        mean = np.array([m for m, _ in row["cumulative_pixels"]])
        sd = np.array([s for _, s in row["cumulative_pixels"]])
        style = "-" if row["start"] == "label_free" else "--"
        left.plot(x, mean, style, marker="o", color=f"C{i}", label=row["arm"])
        left.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.15)
        pool = [m for m, _ in row["pool_dice"]] + ([row["final_pool_dice"][0]] if row["final_pool_dice"] else [])
        right.plot(np.arange(1, len(pool) + 1), pool, style, marker="o", color=f"C{i}", label=row["arm"])
    if rows:
        scratch = [m for m, _ in rows[0]["scratch_pixels"]]
        left.plot(np.arange(1, len(scratch) + 1), scratch, ":", color="grey", label="from scratch (first arm's images)")
    left.set_xlabel("images annotated")
    left.set_ylabel("pixels corrected, cumulative (mean over seeds)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.set_xlabel("round (last point: after the last retraining)")
    right.set_ylabel("pool Dice of the pre-annotations")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    s = record["settings"]
    fig.suptitle(f"Annotation effort, {s['images']} cells_hard images of {s['image_size']} px, seeds {record['seeds']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------------
# the server side
# ---------------------------------------------------------------------------------------------------------------------


def prepare_images(folder: Path, settings: Settings) -> dict[str, tuple[Path, Path]]:
    """Generate the cells_hard images (seed 0) under ``folder``; image id -> (image PNG, true mask PNG)."""
    from common.data.demo import ensure_demo_dataset

    dataset = ensure_demo_dataset(
        "cells_hard", folder, seed=0, num_cases=settings.images, image_size=settings.image_size
    ).parent
    items = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["training"]
    return {Path(i["image"]).stem: (dataset / i["image"], dataset / i["label"]) for i in items}


def _read_png(content: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image).copy()


def preannotate(
    server: AppServer, model: str | None, unlabelled: Sequence[str], shape: tuple[int, ...], settings: Settings
) -> dict[str, np.ndarray]:
    """Batch pre-annotation of every image without a final label by ``model`` (stored as tag ``original`` and read
    back over HTTP); ``None``: empty masks."""
    if model is None:
        return {i: np.zeros(shape, np.uint8) for i in unlabelled}
    params = {"device": settings.device, "multi_gpu": False, "label_tag": "original", "max_workers": 1}
    content, _ = server.request(
        "POST", f"/batch/infer/{model}", query={"images": "unlabeled", "run_sync": "true"}, body=params
    )
    done = set(json.loads(content))
    if done != set(unlabelled):
        raise RuntimeError(f"batch inference of {model} covered {sorted(done)}, expected {sorted(unlabelled)}")
    masks = {}
    for image_id in unlabelled:
        raw, _ = server.request("GET", "/datastore/label", query={"label": image_id, "tag": "original"})
        masks[image_id] = _read_png(raw)
        if masks[image_id].shape != shape:
            raise RuntimeError(f"{model}: mask of {image_id} has shape {masks[image_id].shape}, expected {shape}")
    return masks


def next_epistemic(server: AppServer, unlabelled: Sequence[str], settings: Settings) -> tuple[str, float]:
    """Score the unlabelled images by MC dropout and take the most uncertain one (``/activelearning/epistemic``)."""
    body = {"device": settings.device, "max_workers": 1}
    summary = json.loads(server.request("POST", "/scoring/epistemic", query={"run_sync": "true"}, body=body)[0])
    if summary.get("total") != len(unlabelled):
        raise RuntimeError(f"epistemic scoring saw {summary}, expected {len(unlabelled)} unlabelled images")
    chosen = json.loads(server.request("POST", "/activelearning/epistemic", body={})[0])["id"]
    if chosen not in unlabelled:
        raise RuntimeError(f"/activelearning/epistemic served {chosen}, which has a final label")
    return chosen, float(server.get("/datastore/image/info", image=chosen)["epistemic_entropy"])


def train_semi(server: AppServer, labelled: int, unlabelled: int, settings: Settings, seed: int) -> float:
    """Retrain ``adversarial_semi_seg`` through the server (fresh run of ``epochs`` epochs from the current weights,
    every final label trains, training seed ``seed``; the app then serves its last network, see the module docs);
    returns the wall seconds."""
    from common.handlers.resume import epoch_checkpoints

    models = server.root / "bundles" / SEMI / "models"
    for old in epoch_checkpoints(models):  # a fresh run: no older epoch checkpoint lies around
        old.unlink()
    served = models / "model.pt"
    before = served.stat().st_mtime_ns if served.is_file() else None
    overrides = {
        "epoch_length": settings.epoch_length,
        "batch_size": settings.batch_size,
        "unlabeled_batch_size": min(settings.unlabeled_batch_size, unlabelled),
        "semi_start_epoch": settings.epochs // 4,
        "resume": False,
        "patch_size": [settings.image_size, settings.image_size],
        "seed": seed,
    }
    params = {"max_epochs": settings.epochs, "val_split": 0.0, "multi_gpu": False, "device": settings.device}
    start_log = len(server.log_text())
    started = time.perf_counter()
    server.train(SEMI, {**params, "overrides": overrides})
    wall = time.perf_counter() - started
    expected = f"{labelled} labelled for training, 0 for validation, {unlabelled} unlabelled images"
    if expected not in server.log_text()[start_log:]:
        raise RuntimeError(f"{SEMI}: the server log does not say '{expected}'" + server.log_tail())
    if not served.is_file() or served.stat().st_mtime_ns == before:
        raise RuntimeError(f"{SEMI}: the training did not write {served}" + server.log_tail())
    return wall


def train_label_free(server: AppServer, settings: Settings) -> float:
    """Train the label-free bundle through the server with no final label; returns the wall seconds."""
    size = [settings.image_size, settings.image_size]
    epochs = settings.label_free_epochs
    if settings.label_free == "af_seg":
        overrides: dict[str, Any] = {
            "patch_size": size,
            "batch_size": settings.batch_size,
            "constant_epochs": epochs // 2,
            "decay_epochs": epochs - epochs // 2,
            "val_interval": epochs,
            "dip_steps": 50,
            "background#dsp_max_steps": 50,
        }
    else:
        # small batches give several steps per epoch, and the bright-phase rule looks at the output only after a
        # quarter of the epochs (at epoch 1 of a few steps the output has no contrast yet and the rule is a coin toss)
        overrides = {
            "patch_size": size,
            "batch_size": settings.batch_size,
            "phase_decide_epoch": max(1, epochs // 4),
            "val_interval": epochs,
        }
    params = {"max_epochs": epochs, "val_split": 0.2, "multi_gpu": False, "device": settings.device}
    start_log = len(server.log_text())
    started = time.perf_counter()
    server.train(settings.label_free, {**params, "overrides": overrides})
    wall = time.perf_counter() - started
    if f"0 labelled for training, 0 for validation, {settings.images} unlabelled" not in server.log_text()[start_log:]:
        raise RuntimeError(f"{settings.label_free}: not trained on the {settings.images} images without labels")
    return wall


def run_arm(
    arm: Arm,
    settings: Settings,
    images: Mapping[str, tuple[Path, Path]],
    work: Path,
    label_free_weights: Path | None,
) -> dict[str, Any]:
    """One arm of the loop on its own server (see the module docs); returns its record (``status`` ok or failed)."""
    import torch
    from PIL import Image

    root = work / arm.slug
    root.mkdir(parents=True)
    label_free = arm.start == "label_free"
    bundles = [SEMI] + ([settings.label_free] if label_free else [])
    untrained = (settings.label_free,) if label_free and label_free_weights is None else ()
    torch.manual_seed(arm.seed)  # the untrained weights: the same for every strategy and start of a seed
    prepare_app_root(root, bundles, untrained=untrained, num_images=0)
    if label_free and label_free_weights is not None:
        shutil.copy2(label_free_weights, root / "bundles" / settings.label_free / "models" / "model.pt")
    truth = {}
    for image_id, (image, mask) in images.items():
        shutil.copy2(image, root / "studies" / f"{image_id}.png")
        with Image.open(mask) as m:
            truth[image_id] = np.asarray(m).copy()
    shape = next(iter(truth.values())).shape
    record: dict[str, Any] = {"arm": arm.name, "slug": arm.slug, **asdict(arm), "rounds": [], "status": "failed"}
    env = {**server_env(root), "OMP_NUM_THREADS": str(settings.threads)}
    conf = {"epistemic_model": SEMI, "epistemic_simulation_size": str(settings.simulation_size)}
    server = AppServer(root, free_port(), bundles, conf)
    rng = np.random.default_rng(arm.seed)
    started = time.perf_counter()
    try:
        server.start(env)
        record["server_start_s"] = time.perf_counter() - started
        if label_free and label_free_weights is None:
            record["label_free_train_s"] = train_label_free(server, settings)
            record["label_free_weights"] = str(work / f"label_free_seed{arm.seed}.pt")
            shutil.copy2(root / "bundles" / settings.label_free / "models" / "model.pt", record["label_free_weights"])
        model: str | None = settings.label_free if label_free else None
        labelled: list[str] = []
        for k in range(1, settings.rounds + 1):
            unlabelled = [i for i in sorted(images) if i not in labelled]
            tick = time.perf_counter()
            pre = preannotate(server, model, unlabelled, shape, settings)
            infer_s = time.perf_counter() - tick
            tick = time.perf_counter()
            if arm.strategy == "epistemic":
                chosen, entropy = next_epistemic(server, unlabelled, settings)
            else:
                chosen, entropy = pick_random(unlabelled, rng), None
            select_s = time.perf_counter() - tick
            row = {
                "round": k,
                "model": model,
                "image": chosen,
                "entropy": entropy,
                "dice": dice(pre[chosen], truth[chosen]),
                "pixels_changed": pixels_changed(pre[chosen], truth[chosen]),
                "truth_pixels": int(np.count_nonzero(truth[chosen] == FOREGROUND)),
                "pool_dice": float(np.mean([dice(pre[i], truth[i]) for i in unlabelled])),
                "pool_size": len(unlabelled),
                "infer_s": infer_s,
                "select_s": select_s,
            }
            server.upload_label(chosen, images[chosen][1])
            labelled.append(chosen)
            row["train_s"] = train_semi(
                server, len(labelled), len(images) - len(labelled), settings, 1000 * arm.seed + len(labelled)
            )
            model = SEMI
            record["rounds"].append(row)
            print(
                f"{arm.slug} round {k}: {chosen} dice {row['dice']:.3f}, {row['pixels_changed']} px changed, pool "
                f"dice {row['pool_dice']:.3f}, train {row['train_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        rest = [i for i in sorted(images) if i not in labelled]
        if rest:
            pre = preannotate(server, model, rest, shape, settings)
            record["final_pool_dice"] = float(np.mean([dice(pre[i], truth[i]) for i in rest]))
        record["status"] = "ok"
    except Exception as error:  # one failed arm is reported; the others still run
        record["error"] = f"{type(error).__name__}: {error}"[:4000]
        traceback.print_exc()
    finally:
        server.stop()
        record["wall_s"] = time.perf_counter() - started
    return record


def machine() -> dict[str, Any]:
    """The machine the benchmark ran on."""
    import torch

    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    text = f"{platform.machine()} CPU, {os.cpu_count()} cores, {versions}"
    return {"text": text, "cpu_count": os.cpu_count(), "platform": platform.platform()}


def write_outputs(record: Mapping[str, Any], out: Path, png: Path | None) -> str:
    """Write the JSON record, the markdown table and the plot; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotation_effort.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = markdown(record)
    (out / "annotation_effort.md").write_text(table, encoding="utf-8")
    plot(record, png or out / "annotation_effort.png")
    return table


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every arm of the plan, one after another (the outputs are rewritten after each arm, so an interrupted run
    keeps the arms it finished); returns the JSON record."""
    if not SERVER_PYTHON.is_file():
        raise SystemExit(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}")
    settings = Settings(
        images=args.images,
        image_size=args.image_size,
        rounds=args.rounds,
        epochs=args.epochs,
        epoch_length=args.epoch_length,
        label_free=args.label_free,
        label_free_epochs=args.label_free_epochs,
        simulation_size=args.simulation_size,
        device=args.device,
        threads=args.threads,
    )
    plan = arms_plan(args.strategies, args.starts, args.seeds)
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO))] + sys.argv[1:])
    results: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record() -> dict[str, Any]:
        return {
            "settings": asdict(settings),
            "seeds": list(dict.fromkeys(args.seeds)),
            "machine": machine(),
            "command": command,
            "wall_s": time.perf_counter() - started,
            "results": results,
        }

    with tempfile.TemporaryDirectory(prefix="annotation_effort_") as tmp:
        work = Path(tmp)
        images = prepare_images(work / "data", settings)
        weights: dict[int, Path] = {}
        for arm in plan:
            reuse = weights.get(arm.seed) if arm.start == "label_free" else None
            result = run_arm(arm, settings, images, work, reuse)
            if result.get("label_free_weights") and arm.seed not in weights:
                weights[arm.seed] = Path(result["label_free_weights"])
            result.pop("label_free_weights", None)
            results.append(result)
            print(f"{arm.slug}: {result['status']} in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
            write_outputs(record(), args.out, args.png)
    return record()


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the arms, write the JSON, the table and the plot; exit status 1 if an arm failed."""
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=defaults.images, help="cells_hard images in the studies folder")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="their side in pixels")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="images annotated per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"{SEMI} epochs per round")
    parser.add_argument("--epoch-length", type=int, default=defaults.epoch_length, help="iterations per epoch")
    parser.add_argument("--label-free", default=defaults.label_free, choices=LABEL_FREE_BUNDLES)
    parser.add_argument("--label-free-epochs", type=int, default=defaults.label_free_epochs)
    parser.add_argument("--simulation-size", type=int, default=defaults.simulation_size, help="MC-dropout passes")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="the server's OMP_NUM_THREADS")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "annotation_effort")
    parser.add_argument("--png", type=Path, help="the plot (default: <out>/annotation_effort.png)")
    parser.add_argument("--quick", action="store_true", help="smoke run: " + json.dumps(QUICK))
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.rounds < 1 or args.images <= args.rounds or min(args.epochs, args.epoch_length) < 1:
        parser.error("need --rounds >= 1, --images > --rounds, --epochs and --epoch-length >= 1")
    record = run(args)
    print(write_outputs(record, args.out, args.png))
    return 1 if any(r["status"] != "ok" for r in record["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
