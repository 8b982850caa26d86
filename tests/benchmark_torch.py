"""The PyTorch peer of tests/benchmark.py, in its own process (no TensorFlow here).

tests/benchmark.py starts it with ``--torch_python`` (default: its own interpreter) and
drives it over stdin/stdout so that its rounds interleave with the Keras paths' rounds:

    python tests/benchmark_torch.py --images 2560 --batch_size 128 --arch resnet32 --serve

prints one JSON line ``{"ready": true, "torch": version, "paths": [...]}`` (or
``{"ready": false, "error": ...}`` and exits 0 when torch cannot be imported), then for each
path name read on stdin runs one epoch of it and prints ``{"images", "wall_s", "cpu_s"}``.
An empty line or EOF ends it. Without ``--serve`` it runs each path --rounds times and prints
a JSON object (a quick stand-alone check).

Why a separate process: with the torch 2.14.1 CUDA build, building a torch optimizer in a
process where TensorFlow is loaded segfaults (torch._dynamo importing CUDA bindings).

Paths, on the same random CIFAR-shaped data as tests/benchmark.py (numpy seed 0; no
augmentation), models.resnet32's architecture in channels_last:

  torch_one   one network, cross-entropy step
  torch_two   Co-teaching two-net step: each net's small-loss picks train its peer
  torch_pair  INCV's two independent runs: two nets, each on its own batch (2 x images)
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--arch", default="resnet32")
    p.add_argument("--forget_rate", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all CPUs)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--serve", action="store_true", help="run paths named on stdin")
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu, cuda, or auto (cuda when available)")
    return p.parse_args(argv)


def torch_resnet(torch, depth, num_classes=10):
    """models.resnet32's architecture: 3 x (depth-2)/6 basic blocks of 16/32/64 filters,
    projection shortcut 1x1 conv + BN where the block downsamples or widens."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout)
            self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                         if stride > 1 or cout != cin else nn.Identity())

        def forward(self, x):
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + self.proj(x))

    blocks, cin = [nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, f in enumerate((16, 32, 64)):
        for b in range((depth - 2) // 6):
            blocks.append(Block(cin, f, 2 if stage > 0 and b == 0 else 1))
            cin = f
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*blocks).to(memory_format=torch.channels_last)


def make_path(torch, args, x, y, kind):
    """One epoch of ``kind`` over (x, y); returns the images trained (counting each net's)."""
    depth = int(args.arch.replace("resnet", ""))
    nets = [torch_resnet(torch, depth).to(x.device) for _ in range(1 if kind == "one" else 2)]
    opts = [torch.optim.Adam(n.parameters(), 1e-3) for n in nets]
    ce = torch.nn.functional.cross_entropy
    b = args.batch_size

    def epoch(upto=None):
        order = torch.randperm(len(y), device=y.device)[:upto]
        if kind == "pair":  # two halves, one per net, side by side: b images each per step
            halves = order[: len(order) // 2], order[len(order) // 2:]
            for start in range(0, len(halves[0]), b):
                for o in opts:
                    o.zero_grad(set_to_none=True)
                for net, half in zip(nets, halves):
                    idx = half[start:start + b]
                    ce(net(x[idx]), y[idx]).backward()
                for o in opts:
                    o.step()
            return len(order)
        for start in range(0, len(order), b):
            idx = order[start:start + b]
            xb, yb = x[idx], y[idx]
            for o in opts:
                o.zero_grad(set_to_none=True)
            if kind == "one":
                ce(nets[0](xb), yb).backward()
            else:  # Co-teaching: small-loss picks of each net train its peer
                l1 = ce(nets[0](xb), yb, reduction="none")
                l2 = ce(nets[1](xb), yb, reduction="none")
                keep = round(len(yb) * (1 - args.forget_rate))
                pick1 = torch.topk(-l1.detach(), keep).indices
                pick2 = torch.topk(-l2.detach(), keep).indices
                (l1[pick2].mean() + l2[pick1].mean()).backward()
            for o in opts:
                o.step()
        return len(order)
    return epoch


def timed(run, sync=None):
    t, c = time.perf_counter(), time.process_time()
    images = run()
    if sync is not None:
        sync()  # CUDA runs asynchronously: wait for the epoch's last kernel
    return {"images": images, "wall_s": time.perf_counter() - t,
            "cpu_s": time.process_time() - c}


def main(args):
    try:
        import torch
    except ImportError as err:
        print(json.dumps({"ready": False, "error": f"torch not importable: {err}"}), flush=True)
        return 0
    torch.manual_seed(0)
    torch.set_num_threads(args.threads or os.cpu_count())
    rng = np.random.default_rng(0)  # the same data as tests/benchmark.py
    n = args.images
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8).astype(np.float32) / 255
    y = rng.integers(0, 10, n)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(y)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = x.to(device), y.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    paths = {f"torch_{k}": make_path(torch, args, x, y, k) for k in ("one", "two", "pair")}
    for run in paths.values():  # first allocations, a few steps: not timed
        run(upto=4 * args.batch_size)
    info = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "paths": list(paths), "device": device}
    if not args.serve:
        info["rounds"] = {k: [timed(run, sync) for _ in range(args.rounds)]
                          for k, run in paths.items()}
        print(json.dumps(info), flush=True)
        return 0
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        if name not in paths:
            print(json.dumps({"error": f"unknown path {name!r}"}), flush=True)
            continue
        print(json.dumps(timed(paths[name], sync)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
