"""CPU seconds per training iteration: the authors' original code for Vorontsov et al. (MedIA 2022) beside ours.

    OMP_NUM_THREADS=1 python benchmarks/experiments/translation_vs_authors.py --authors-repo /tmp/genseg \\
        --extra-path /tmp/fcn_maker [--iterations 6] [--labelled-fraction 0.01] [--out /tmp/translation_vs_authors]

Getting the authors' code (nothing of it is copied into this repository; it is imported from the given paths):

* veugene/genseg (the paper's code): ``git clone https://github.com/veugene/genseg /tmp/genseg`` (the ``fetch``
  tool, source ``github:veugene/genseg``, then ``git -C <mirror> archive HEAD | tar -x -C /tmp/genseg``, gives
  the same files). Its git submodules are not needed except ``fcn_maker``.
* veugene/fcn_maker, branch ``pytorch`` (genseg pins commit f9e2dab of that library; the ``pytorch`` branch is the
  PyTorch version, the default branch is the old Keras one): ``git clone -b pytorch
  https://github.com/veugene/fcn_maker /tmp/fcn_maker``; pass ``--extra-path /tmp/fcn_maker``.
* Compatibility shims applied here, at run time, without editing their files: ``np.product = np.prod`` where NumPy
  (>= 2) lacks it, and, during the authors' iterations only, ``torch.cuda.current_device`` returns ``"cpu"`` (their
  ``_z_sample`` moves the sampled code to that device; their code otherwise targets one GPU).

Authors' side, per iteration (``model/configs/mnist/bds3/bds3_003.py``, ``build_model()`` with its defaults:
N = 512 bottleneck channels, encoder 32-64-128-256-512, 128 sampled channels, lambdas disc 3, x_id 50, z_id 1,
f_id 0, cyc 50, seg 0.01, mi 0, hinge GAN, spectral norm everywhere but the segmentation output, 1x48x48 images):
exactly what their ``cluttered_mnist_segmentation.py`` ``training_function`` does, i.e. ``model.train()`` on G, D and
E, then ``G(x_A, x_B, M, optimizer={"G", "D", "E"})``, which (``model/bd_segmentation.py``) computes all generator
outputs, takes one step of both discriminators (hinge), one step of the MINE mutual-information estimator ``E``
(trained although ``lambda_mi`` is 0, as in their code), then one generator step on ``3 L_gan + 50 L_rec(AA, BB) +
50 L_cyc + 1 L_z + 0.01 L_dice``. Optimisers as their training script's defaults for MNIST: AMSGrad, lr 1e-3, betas
(0.5, 0.999), weight decay 1e-4, one per G, D and E. Inputs (float32 in [0, 1], like their cluttered MNIST):
absent ``x_B`` = 0.01 x uniform noise + 8 random 10x10 clutter patches; present ``x_A`` = the same plus one random
28x28 "digit" patch; masks as their data loader gives them: a list with one ``(1, 48, 48)`` int64 mask
(patch > 0.5) for each present image drawn as labelled with probability ``--labelled-fraction`` (0.01 by default:
most batches then carry no mask and the Dice term is skipped, as with their 1% split), ``None`` for the others.
Batches are generated before the clock starts (their data loading is not timed).

Our side: ``benchmarks/translation_cost.iteration_cpu_seconds`` (the bundle ``translation_semi_seg``, mode
"translation", directions "both", ``network_width`` 1.0, preset discriminators, batch 10 P + 10 A, 48x48, 1% labelled
split of 200 generated training images): one generator step on ``3 L_adv + 50 L_rec + 50 L_cyc + 1 L_lat + 0.01
L_seg`` and one hinge step of both discriminators, AMSGrad with the same settings. Differences: ours has no MINE
estimator (nothing to train, its weight being 0 in the paper's configuration); ours is timed from ignite's
ITERATION_STARTED to ITERATION_COMPLETED, which includes fetching the A batch from its loader (no workers) and the
MONAI engine's bookkeeping, so ours carries a little overhead the authors' side does not.

Both run in this process with ``torch.set_num_threads(1)``; each side runs ``--iterations`` iterations, the first a
warm-up, and the table gives the median of the others' process CPU time (``time.process_time``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the repository root, for the benchmarks package
    sys.path.insert(0, str(REPO))

from benchmarks.translation_cost import iteration_cpu_seconds  # noqa: E402

SIZE = 48
CONFIG = "model/configs/mnist/bds3/bds3_003.py"


@contextmanager
def cpu_as_current_device() -> Iterator[None]:
    """Make ``torch.cuda.current_device()`` return ``"cpu"`` (the authors' code moves samples to it)."""
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.cuda.current_device = original  # type: ignore[assignment]


def load_authors_config(authors_repo: str, extra_paths: list[str]) -> ModuleType:
    """Import the authors' ``bds3_003`` configuration module from their checkout."""
    for path in [authors_repo, *extra_paths]:
        if path not in sys.path:
            sys.path.append(path)
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]  # removed in NumPy 2, used by their code
    spec = importlib.util.spec_from_file_location("authors_bds3_003", f"{authors_repo}/{CONFIG}")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{authors_repo}/{CONFIG}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_batch(
    rng: np.random.RandomState, batch_size: int, labelled_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray | None]]:
    """Absent images, present images and the present images' mask list (``None``: unlabelled), as their loader."""

    def cluttered() -> np.ndarray:
        image = 0.01 * rng.uniform(size=(1, SIZE, SIZE)).astype(np.float32)
        for _ in range(8):
            row, col = rng.randint(0, SIZE - 10, size=2)
            image[0, row : row + 10, col : col + 10] = np.maximum(
                image[0, row : row + 10, col : col + 10], rng.uniform(size=(10, 10))
            )
        return image

    absent = np.stack([cluttered() for _ in range(batch_size)])
    present = np.stack([cluttered() for _ in range(batch_size)])
    masks: list[np.ndarray | None] = []
    for image in present:
        row, col = rng.randint(0, SIZE - 28, size=2)
        digit = rng.uniform(size=(28, 28)).astype(np.float32)
        image[0, row : row + 28, col : col + 28] = np.maximum(image[0, row : row + 28, col : col + 28], digit)
        mask = np.zeros((1, SIZE, SIZE), dtype=np.int64)
        mask[0, row : row + 28, col : col + 28] = digit > 0.5
        masks.append(mask if rng.uniform() < labelled_fraction else None)
    return torch.from_numpy(absent), torch.from_numpy(present), masks


def authors_iteration_cpu_seconds(
    authors_repo: str, extra_paths: list[str], iterations: int, batch_size: int, labelled_fraction: float
) -> tuple[list[float], int]:
    """Process CPU seconds of each authors' training iteration, and how many iterations had at least one mask."""
    config = load_authors_config(authors_repo, extra_paths)
    torch.manual_seed(1234)
    model: dict[str, torch.nn.Module] = config.build_model()
    optimizer = {
        key: torch.optim.Adam(
            [p for p in module.parameters() if p.requires_grad],
            lr=1e-3,
            betas=(0.5, 0.999),
            weight_decay=1e-4,
            amsgrad=True,
        )
        for key, module in model.items()
    }
    rng = np.random.RandomState(0)
    batches = [generated_batch(rng, batch_size, labelled_fraction) for _ in range(iterations)]
    seconds: list[float] = []
    with cpu_as_current_device():
        for absent, present, masks in batches:
            start = time.process_time()
            for module in model.values():
                module.train()
            outputs: dict[str, Any] = model["G"](present, absent, masks, optimizer=optimizer)
            seconds.append(time.process_time() - start)
            del outputs
    with_masks = sum(any(m is not None for m in masks) for _, _, masks in batches[1:])
    return seconds, with_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-repo", required=True, help="checkout of veugene/genseg")
    parser.add_argument("--extra-path", nargs="*", default=[], help="paths of their dependencies (fcn_maker)")
    parser.add_argument("--iterations", type=int, default=6, help="iterations per side, the first a warm-up")
    parser.add_argument("--labelled-fraction", type=float, default=0.01, help="authors' side: P(mask) per image")
    parser.add_argument("--out", default="/tmp/translation_vs_authors", help="folder for our generated data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    iterations = max(2, args.iterations)

    authors, with_masks = authors_iteration_cpu_seconds(
        args.authors_repo, args.extra_path, iterations, 10, args.labelled_fraction
    )
    ours = iteration_cpu_seconds(1.0, iterations, None, args.out)
    print("authors' CPU s per iteration:", ", ".join(f"{s:.2f}" for s in authors))
    print(f"  ({with_masks} of the {iterations - 1} timed authors' iterations had a labelled mask)")
    print("ours CPU s per iteration:", ", ".join(f"{s:.2f}" for s in ours))
    authors_median = statistics.median(authors[1:])
    ours_median = statistics.median(ours[1:])
    n = iterations - 1
    print()
    print(f"| implementation | CPU s / iteration (median of {n}) | ratio |")
    print("|---|---|---|")
    print(f"| authors' genseg bds3_003 (batch 10 + 10, 48x48) | {authors_median:.2f} | 1.00 |")
    print(
        f"| ours translation_semi_seg, width 1.0 (batch 10 + 10, 48x48) | {ours_median:.2f} | "
        f"{ours_median / authors_median:.2f} |"
    )


if __name__ == "__main__":
    main()
