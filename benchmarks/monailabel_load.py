"""Concurrent inference requests against the repository's MONAI Label app: success count, latency and throughput.

    python benchmarks/monailabel_load.py [--bundle adversarial_semi_seg] [--requests 50] [--concurrency 10 ...]
        [--images 5] [--warmup 1] [--threads 1] [--json FILE] [--markdown FILE]

Starts ``monailabel_app/`` (monailabel 0.8.5 from its own environment, ``.venv/monailabel`` or ``MONAILABEL_PYTHON``, as
the tests do) on 127.0.0.1 at a free port, in a temporary folder laid out by ``prepare_app_root`` of
common/monailabel_harness.py (the tests' harness): the app, one copy of ``--bundle`` with its untrained network's
weights (nothing is written into ``bundles/``), and a studies folder of ``--images`` small generated grey PNGs (48x56, a
bright disk on noise, the tests' images). After ``--warmup`` untimed requests (the first one loads the model), for each
``--concurrency`` value it sends ``--requests`` inference requests (``POST /infer/<bundle>?image=...&output=image``,
cycling over the images) from a pool of that many threads, each thread waiting for its answer before sending the next
(a bounded request loop: at most ``concurrency`` requests in flight), and checks each answer is a mask of the image's
size with the bundle's label values (the harness's ``concurrent_inference``). Printed, and written with ``--markdown``:
one row per concurrency with the successes, p50 (median) / p95 (nearest rank) / max latency (seconds from sending a
request to its full answer), throughput (successful requests per second of the loop's wall time), the machine (CPU
count, the server's torch threads: ``OMP_NUM_THREADS``, set by ``--threads``) and the command. ``--json FILE`` (``-``
for stdout) writes the same with every request's latency.
Loopback only: the server listens on 127.0.0.1 and every request goes there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.monailabel_harness import (  # noqa: E402
    SERVER_PYTHON,
    SETUP_HINT,
    SIZE,
    AppServer,
    concurrent_inference,
    free_port,
    prepare_app_root,
    server_env,
)


def summarise(latencies: list[float], successes: int, wall: float) -> dict[str, float]:
    """p50 / p95 / max latency (s, nearest-rank percentiles of all requests) and throughput (successes / wall s)."""
    ordered = sorted(latencies)
    if not ordered:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "max_s": float("nan"), "throughput_rps": 0.0}
    return {
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[max(0, int(np.ceil(0.95 * len(ordered))) - 1)],
        "max_s": ordered[-1],
        "throughput_rps": successes / wall if wall > 0 else 0.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, send the warm-up requests and one timed loop per concurrency; return the JSON record."""
    if not SERVER_PYTHON.is_file():
        raise SystemExit(f"no MONAI Label environment at {SERVER_PYTHON}; make it with:\n{SETUP_HINT}")
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO))] + sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory(prefix="monailabel_load_") as tmp:
        root = Path(tmp)
        prepare_app_root(root, [args.bundle], num_images=args.images)
        env = {**server_env(root), "OMP_NUM_THREADS": str(args.threads)}
        server = AppServer(root, free_port(), [args.bundle], {"skip_trainers": "true"})
        images = [f"img{i}" for i in range(args.images)]
        try:
            started = time.perf_counter()
            server.start(env)
            start_s = time.perf_counter() - started
            if args.warmup:
                warm, _ = concurrent_inference(server, args.bundle, images, args.warmup, 1)
                errors = [r.error for r in warm if r.error]
                if errors:
                    raise SystemExit(f"warm-up request failed: {errors[0]}" + server.log_tail())
            for concurrency in args.concurrency:
                results, wall = concurrent_inference(server, args.bundle, images, args.requests, concurrency)
                ok = [r for r in results if r.error is None]
                rows.append(
                    {
                        "requests": args.requests,
                        "concurrency": concurrency,
                        "successes": len(ok),
                        "wall_s": wall,
                        **summarise([r.latency for r in results], len(ok), wall),
                        "latencies_s": [r.latency for r in results],
                        "errors": [r.error for r in results if r.error is not None],
                    }
                )
                print(f"concurrency {concurrency}: {len(ok)}/{args.requests} ok in {wall:.1f} s", file=sys.stderr)
        finally:
            server.stop()
    return {
        "bundle": args.bundle,
        "image_size": list(SIZE),
        "images": args.images,
        "warmup": args.warmup,
        "server_start_s": start_s,
        "machine": {
            "cpu_count": os.cpu_count(),
            "server_torch_threads": args.threads,
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "command": command,
        "rows": rows,
    }


def markdown(record: dict[str, Any]) -> str:
    """The record as a markdown table, one row per concurrency."""
    machine = record["machine"]
    where = f"{machine['cpu_count']} CPUs, {machine['server_torch_threads']} torch thread(s)"
    height, width = record["image_size"]
    lines = [
        f"{record['bundle']}, {record['images']} images of {height}x{width}, {record['warmup']} untimed warm-up "
        f"request(s), server start {record['server_start_s']:.1f} s",
        "",
        "| requests | concurrency | successes | p50 latency (s) | p95 latency (s) | max latency (s) "
        "| throughput (requests/s) | machine | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['requests']} | {row['concurrency']} | {row['successes']} | {row['p50_s']:.3f} "
            f"| {row['p95_s']:.3f} | {row['max_s']:.3f} | {row['throughput_rps']:.2f} | {where} "
            f"| `{record['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print the table; exit status 1 when a request failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="adversarial_semi_seg", help="the one bundle served (with weights)")
    parser.add_argument("--requests", type=int, default=50, help="inference requests per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10], help="threads (requests in flight)")
    parser.add_argument("--images", type=int, default=5, help="generated images in the studies folder")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests before the timed loops")
    parser.add_argument("--threads", type=int, default=1, help="the server's OMP_NUM_THREADS")
    parser.add_argument("--json", help="write the record (with every latency) to this file; '-' for stdout")
    parser.add_argument("--markdown", help="write the table to this file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.images < 1 or min(args.concurrency) < 1:
        parser.error("--requests, --images and --concurrency must be at least 1")
    record = run(args)
    table = markdown(record)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    if args.json:
        text = json.dumps(record, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    failed = sum(row["requests"] - row["successes"] for row in record["rows"])
    for row in record["rows"]:
        for error in row["errors"][:3]:
            print(f"concurrency {row['concurrency']}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
