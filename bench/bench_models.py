"""Training and inference step time and peak memory per model, papers' Moving MNIST set-up.

Batch 8, 10 -> 10 frames of 64x64x1, 4 x 64 hidden, kernel 3, patch 4. A training step is the
forward rollout (19 next-frame outputs), an L1 + L2 loss, the backward pass and one AdamW update;
an inference step is the 10-frame forecast under `torch.no_grad()`. Each model runs in its own
process so that its peak memory is its own.

    python bench/bench_models.py                       # all models, fp32, 2 threads, CPU
    python bench/bench_models.py --models cms_lstm --dtype bf16
    python bench/bench_models.py --device cuda --dtype bf16 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time


def measure(args: argparse.Namespace) -> dict:
    import torch

    from stforecast import models

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = models.build(
        args.one,
        in_channels=1,
        frame_size=(64, 64),
        patch_size=4,
        hidden_channels=[64] * 4,
        kernel_size=3,
    ).to(device)
    if args.compile:
        for cell in net.cells:
            cell.compile()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(args.batch, 20, 1, 64, 64, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args.dtype]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            y = net.rollout(x[:, :10], 10).float()
        target = x[:, 1:]
        loss = torch.nn.functional.mse_loss(y, target) + torch.nn.functional.l1_loss(y, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step() -> None:
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
        ):
            net(x[:, :10], 10)

    def timed(fn, n: int) -> list[float]:
        fn()  # warm-up: kernel selection, allocator, compilation
        sync()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t)
        return out

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    train = timed(train_step, args.repeat)
    infer = timed(infer_step, args.repeat)
    result = {
        "model": args.one,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_s": statistics.median(train),
        "train_min_s": min(train),
        "infer_s": statistics.median(infer),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "base_rss_mb": base_rss,
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["device_name"] = torch.cuda.get_device_name()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convlstm,predrnn,sa_base,sa_convlstm,cms_lstm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each cell")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", name, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if args.json:
            print(out.stdout.strip(), flush=True)
    if args.json:
        return
    print(
        f"# {platform.processor() or platform.machine()}, {args.device}, {args.threads} threads, "
        f"{args.dtype}{', compiled' if args.compile else ''}, batch {args.batch}, "
        f"median of {args.repeat}"
    )
    print("| model | parameters | train step (s) | inference step (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['parameters']:,} | {r['train_s']:.2f} | {r['infer_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
