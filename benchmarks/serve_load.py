"""Load run of ``anygen serve``: throughput and latency of text->image requests with 1 vs 2 image-generator
replicas, on the tiny pipeline, a local Ray instance (CPU) and loopback HTTP.

    python -m benchmarks.serve_load [--requests 50] [--concurrency 4] [--replicas 1,2] [--rounds 2]
                                    [--steps 8] [--num-cpus 4] [--out benchmarks/results.json]

Each run sends ``--requests`` requests, ``--concurrency`` at a time, after a warm-up; the image generator's
replica count is changed in place between runs (the other deployments are kept). With ``--rounds 2`` the
replica counts alternate A B B A so that drift in the machine's load hits both alike. Results go to
``results.json`` under the top-level key ``serving`` (the file's other keys are kept; it is created if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results.json"
PROMPT = "a dog running on a beach"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict[str, Any], timeout: float = 300) -> tuple[int, dict[str, Any], float]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, out = resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        status, out = err.code, json.loads(err.read() or b"{}")
    return status, out, time.perf_counter() - t0


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0..100) of ``xs``."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(
    latencies: list[float], wall: float, errors: int, stages: dict[str, list[float]]
) -> dict[str, Any]:
    ok = len(latencies)
    return {
        "requests": ok + errors,
        "errors": errors,
        "wall_s": round(wall, 3),
        "throughput_rps": round(ok / wall, 3) if wall > 0 else None,
        "latency_s": {
            "mean": round(statistics.fmean(latencies), 4) if latencies else None,
            "p50": round(percentile(latencies, 50), 4),
            "p90": round(percentile(latencies, 90), 4),
            "p95": round(percentile(latencies, 95), 4),
            "p99": round(percentile(latencies, 99), 4),
            "max": round(max(latencies), 4) if latencies else None,
        },
        "server_stage_median_ms": {k: round(statistics.median(v), 2) for k, v in stages.items() if v},
    }


def load_run(url: str, requests: int, concurrency: int, body: dict[str, Any], seed0: int) -> dict[str, Any]:
    """``requests`` requests (seeds seed0, seed0+1, ...), ``concurrency`` in flight at a time."""

    def one(i: int):
        return _post(url, {**body, "seed": seed0 + i})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - t0
    latencies = [lat for status, _, lat in results if status == 200]
    errors = sum(status != 200 for status, _, _ in results)
    stages: dict[str, list[float]] = {"llm": [], "image": [], "total": []}
    for status, out, _ in results:
        if status == 200:
            for k in stages:
                if k in out.get("timings_ms", {}):
                    stages[k].append(out["timings_ms"][k])
    summary = summarize(latencies, wall, errors, stages)
    summary["latencies_s"] = [round(x, 4) for x in latencies]
    return summary


def write_serving(path: Path, serving: dict[str, Any]) -> None:
    """Read-modify-write ``path``: set the top-level ``serving`` key, keep every other key as it is."""
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
    existing["serving"] = serving
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(existing, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50, help="requests per run (default 50)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument(
        "--replicas", default="1,2", help="image-generator replica counts to compare (default 1,2)"
    )
    p.add_argument(
        "--rounds", type=int, default=2, help="A B B A ... rounds over the replica counts (default 2)"
    )
    p.add_argument("--steps", type=int, default=8, help="denoising steps per image (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--pipeline", default="tiny")
    p.add_argument(
        "--num-cpus", type=int, default=4, help="the local Ray instance's logical CPUs (default 4)"
    )
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per replica (default 1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-write", action="store_true", help="print, do not write results.json")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",") if x.strip()]

    os.environ.setdefault("OMP_NUM_THREADS", str(args.torch_threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from anygen.serve.app import base_url, connect, deploy
    from anygen.serve.config import ServeConfig

    base = {
        "pipeline": args.pipeline,
        "app_name": "anygen-load",
        "http": {"host": "127.0.0.1", "port": _free_port()},
        "ray": {"num_cpus": args.num_cpus},
        "llm": {"torch_threads": args.torch_threads},
    }

    def config_for(n: int) -> ServeConfig:
        return ServeConfig.from_dict(base).with_overrides(
            **{
                "generators.image.num_replicas": n,
                "generators.image.torch_threads": args.torch_threads,
                # One request at a time per replica: more would only queue inside it, hiding the replica count.
                "generators.image.max_ongoing_requests": 1,
            }
        )

    body = {
        "prompt": PROMPT,
        "output_modalities": ["image"],
        "max_new_tokens": args.max_new_tokens,
        "num_inference_steps": args.steps,
    }
    order: list[int] = []
    for r in range(args.rounds):
        order += counts if r % 2 == 0 else counts[::-1]

    load_start = os.getloadavg()
    connect(config_for(counts[0]))
    import ray
    from ray import serve

    runs: list[dict[str, Any]] = []
    try:
        deployed = None
        for i, n in enumerate(order):
            config = config_for(n)
            if deployed != n:
                t0 = time.perf_counter()
                deploy(config)
                deployed = n
                print(f"deployed {n} image replica(s) in {time.perf_counter() - t0:.1f}s", flush=True)
            url = f"{base_url(config)}/v1/generate"
            load_run(url, 2 * max(n, args.concurrency), args.concurrency, body, seed0=10_000)  # warm-up
            result = load_run(url, args.requests, args.concurrency, body, seed0=1000 * i)
            result.update(image_replicas=n, round=i, load_average_1m=round(os.getloadavg()[0], 2))
            runs.append(result)
            lat = result["latency_s"]
            print(
                f"image replicas={n}: {result['throughput_rps']:.2f} req/s, p50 {lat['p50']:.3f}s "
                f"p90 {lat['p90']:.3f}s p99 {lat['p99']:.3f}s, errors {result['errors']}",
                flush=True,
            )
    finally:
        serve.shutdown()
        ray.shutdown()

    by_count: dict[str, Any] = {}
    for n in counts:
        mine = [r for r in runs if r["image_replicas"] == n]
        lat = [x for r in mine for x in r["latencies_s"]]
        wall = sum(r["wall_s"] for r in mine)
        stages = {
            k: [r["server_stage_median_ms"][k] for r in mine if k in r["server_stage_median_ms"]]
            for k in ("llm", "image", "total")
        }
        by_count[str(n)] = summarize(lat, wall, sum(r["errors"] for r in mine), stages)
    serving: dict[str, Any] = {
        "what": "POST /v1/generate text->image on the tiny pipeline, local Ray (CPU), loopback HTTP",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "requests_per_run": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "order": order,
            "num_inference_steps": args.steps,
            "max_new_tokens": args.max_new_tokens,
            "ray_num_cpus": args.num_cpus,
            "torch_threads_per_replica": args.torch_threads,
            "image_max_ongoing_requests": 1,
            "other_deployments": "ingress, llm, video and audio generators: 1 replica each",
        },
        "by_image_replicas": by_count,
        "runs": runs,
    }
    if len(counts) == 2 and all(by_count[str(n)]["throughput_rps"] for n in counts):
        a, b = (by_count[str(n)] for n in counts)
        serving["throughput_ratio"] = round(b["throughput_rps"] / a["throughput_rps"], 3)
        serving["p50_latency_ratio"] = round(b["latency_s"]["p50"] / a["latency_s"]["p50"], 3)
    if args.no_write:
        print(json.dumps(serving, indent=2))
    else:
        write_serving(args.out, serving)
        print(f"wrote {args.out} (key 'serving')")
    for n in counts:
        s = by_count[str(n)]
        print(
            f"  {n} image replica(s): {s['throughput_rps']} req/s; latency p50 {s['latency_s']['p50']}s, "
            f"p90 {s['latency_s']['p90']}s, p99 {s['latency_s']['p99']}s; errors {s['errors']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
