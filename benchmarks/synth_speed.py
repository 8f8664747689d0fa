"""DeepInversion throughput: hwprune's loop against a plain reference loop, in the same run.

The reference is written here as the original DeepInversion code does it: fp32,
BatchNorm statistics by permute + view + var in a forward hook, the four TV
differences, the l2 prior, jitter and flip, Adam, clipping. hwprune's loop is
``synth.synthesize_batch`` with the speed-ups that apply on the device (one
fused ``var_mean`` for the statistics everywhere; on CUDA also autocast and
channels_last). Both make the same number of images for the same iterations,
after a warm-up; the ratio is reported. Defaults: the demo net on CPU; with
``--device cuda`` resnet50 at 224 px (target there: >= 2x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from _common import machine, write_json  # noqa: E402
from hwprune.synth import PRESETS, synthesize_batch  # noqa: E402
from hwprune.zoo import resolve_model  # noqa: E402


class _RefHook:
    def __init__(self, m: nn.BatchNorm2d) -> None:
        self.h = m.register_forward_hook(self.fn)
        self.loss = None

    def fn(self, module, inputs, output):
        x = inputs[0]
        nch = x.shape[1]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).contiguous().view([nch, -1]).var(1, unbiased=False)
        self.loss = torch.norm(module.running_var.data - var, 2) + \
            torch.norm(module.running_mean.data - mean, 2)


def reference_loop(model, targets, cfg, size, channels, device, gen) -> torch.Tensor:
    hooks = [_RefHook(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    mean = torch.tensor(cfg.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=device).view(1, -1, 1, 1)
    x = torch.randn(len(targets), channels, size, size, generator=gen).to(device)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(cfg.iterations):
        dx, dy = torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen).tolist()
        xj = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        if cfg.flip and torch.rand((), generator=gen) < 0.5:
            xj = torch.flip(xj, dims=(3,))
        out = model(xj)
        d1 = xj[:, :, :, :-1] - xj[:, :, :, 1:]
        d2 = xj[:, :, :-1, :] - xj[:, :, 1:, :]
        d3 = xj[:, :, 1:, :-1] - xj[:, :, :-1, 1:]
        d4 = xj[:, :, :-1, :-1] - xj[:, :, 1:, 1:]
        tv = torch.norm(d1) + torch.norm(d2) + torch.norm(d3) + torch.norm(d4)
        rescale = [cfg.first_bn_multiplier] + [1.0] * (len(hooks) - 1)
        bn = sum(r * h.loss for r, h in zip(rescale, hooks))
        loss = F.cross_entropy(out, targets) + cfg.alpha_f * bn + cfg.alpha_tv_l2 * tv + \
            cfg.alpha_l2 * torch.norm(xj.view(len(targets), -1), dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.data = torch.max(torch.min(x, (1 - mean) / std), (0 - mean) / std)
    for h in hooks:
        h.h.remove()
    return x.detach()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for synth_speed.json")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default=None, help="[default: demo on cpu, resnet50 on cuda]")
    ap.add_argument("--batch", type=int, default=None, help="[default: 64 cpu, 64 cuda]")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name = args.model or ("demo" if args.device == "cpu" else "resnet50")
    resolved = resolve_model(name)
    model = resolved.module.to(args.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    size, channels = resolved.input_size, resolved.in_channels
    batch = args.batch or 64
    base = PRESETS["demo" if name == "demo" else "kt"].with_(iterations=args.iterations)
    fast = base.with_(amp="bf16", channels_last=True) if args.device == "cuda" else base
    if args.device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    targets = (torch.arange(batch) % 10).to(args.device)
    runs = {"reference": [], "hwprune": []}
    for r in range(args.repeats + 1):  # the first pass of each is warm-up
        for label in (("reference", "hwprune") if r % 2 == 0 else ("hwprune", "reference")):
            gen = torch.Generator().manual_seed(r)
            _sync(args.device)
            t0 = time.perf_counter()
            if label == "reference":
                reference_loop(model, targets, base, size, channels, args.device, gen)
            else:
                synthesize_batch(model, targets.cpu(), fast, size, channels, gen)
            _sync(args.device)
            if r:
                runs[label].append(time.perf_counter() - t0)
    ips = {k: batch / statistics.median(v) for k, v in runs.items()}
    payload = {"benchmark": "synth_speed", "machine": machine(args.device), "model": name,
               "input_size": size, "batch": batch, "iterations": args.iterations,
               "images_per_second": ips, "seconds": runs,
               "speedup": ips["hwprune"] / ips["reference"],
               "hwprune_options": {"amp": fast.amp, "channels_last": fast.channels_last}}
    path = write_json(args.out, "synth_speed.json", payload)
    print(f"{name} @ {size}px batch {batch}, {args.iterations} iterations on {args.device}: "
          f"reference {ips['reference']:.2f} img/s, hwprune {ips['hwprune']:.2f} img/s, "
          f"speed-up x{payload['speedup']:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
