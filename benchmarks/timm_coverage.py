"""Which timm CNN families hwprune takes through the whole job.

A family is a module of ``timm.models`` (resnet, efficientnet, regnet, ghostnet, ...); its
member here is the one with the fewest parameters (counted on the meta device, no
weights). A family is in scope when that member has both ``Conv2d`` and ``BatchNorm2d``
layers (timm's ``BatchNormAct2d`` is one); the rest are listed with the reason. Each
in-scope member, built as ``timm:NAME`` (random weights, nothing downloaded), at a small
input (``--input-size``, raised where the model needs more) and a coarse channel step,
goes through the stages of ``benchmarks/torchvision_coverage.py`` (trace, profile a few
keys and one of every operator kind, estimate, one pruned variant estimated strictly,
the pruner's groups with a few removed and a training step), then:

  validate  the variant and the original measured end to end and compared with the
            stand-in table's estimate (one ``lut validate`` row each, 2 rounds)
  synth     a few DeepInversion iterations on 2 images
  save      the variant saved as an hwprune checkpoint (builder spec, channel layout,
            weights), reloaded in a fresh process, outputs equal to the variant's
            within 1e-5
  onnx      the variant exported to ONNX and checked in ONNX Runtime

Outcome per family: *works* (every stage ok), *refused* (every failure one of hwprune's
own errors, which names the operator or the coupling), or *fails* (anything else: a bug).
Writes ``OUT/timm_coverage.json``; prints one line per family.

    python benchmarks/timm_coverage.py --out DIR
    python benchmarks/timm_coverage.py --out DIR --families resnet,ghostnet
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import torchvision_coverage as tvc  # noqa: E402
from _common import machine, write_json  # noqa: E402
from hwprune.zoo.models import classifier_scope  # noqa: E402

EXTRA = ("validate", "synth", "save", "onnx")
ALL_STAGES = (*tvc.STAGES, *EXTRA)
# Inputs smaller than 64 px do not run these members (fixed pooling or attention windows).
MIN_INPUT = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75,
             "nasnet": 96, "pnasnet": 96}


def smallest_member(module: str) -> tuple[str | None, int]:
    """(the family's model with the fewest parameters, its parameter count)."""
    import timm

    best: tuple[int, str] | None = None
    # timm's test_* models are stand-ins made for timm's own tests, not members to ship
    for name in (n for n in timm.list_models(module=module) if not n.startswith("test_")):
        try:
            with torch.device("meta"):
                net = timm.create_model(name, pretrained=False)
        except Exception:  # noqa: BLE001 - a member that cannot be built is not the member
            continue
        params = sum(p.numel() for p in net.parameters())
        if best is None or params < best[0]:
            best = (params, name)
    return (best[1], best[0]) if best else (None, 0)


def _module_of(name: str) -> str:
    """The timm module (family) that defines model ``name``."""
    import timm

    return next((m for m in timm.list_modules() if name in timm.list_models(module=m)), "?")


def input_size(name: str, family: str, args) -> int:
    """``--input-size`` (raised for the families that need more) where the member runs at
    it; otherwise the input of timm's own config (attention with fixed-size position
    biases, such as LeViT's, runs at that size only)."""
    import timm

    size = max(args.input_size, MIN_INPUT.get(family, 0))
    net = timm.create_model(name, pretrained=False).eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, net.pretrained_cfg.get("input_size", (3,))[0], size, size))
        return size
    except Exception:  # noqa: BLE001 - any failure at the small size: use timm's own
        return int(net.pretrained_cfg["input_size"][-1])


def _settle_batchnorm(net: torch.nn.Module, in_ch: int, size: int) -> None:
    """BatchNorm statistics of the variant's own activations (a few random batches): with
    timm's initial weights and unit statistics, activations grow layer by layer to
    outputs in the thousands, where float rounding alone exceeds the checks' tolerances;
    a trained network's BatchNorms keep them near unit scale, as these do after this."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, in_ch, size, size))
    net.eval()


def _channels_of(net: torch.nn.Module) -> dict[str, int]:
    return {n: (m.out_channels if isinstance(m, torch.nn.Conv2d) else m.out_features)
            for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def extra_stages(spec: str, rec: dict, state: dict, tmp: Path) -> None:
    """The stages beyond the torchvision survey, on the survey's pruned variant."""
    from hwprune.luts import estimate_trace
    from hwprune.luts.variants import measure_interleaved
    from hwprune.profiler import TimingConfig, trace_model
    from hwprune.synth import DIConfig
    from hwprune.synth.deepinversion import bn_targets, synthesize_batch
    from hwprune.zoo import save_checkpoint
    from hwprune.zoo.export import export_model

    model, net, size = state["model"], state["variant"], rec["input_size"]
    in_ch = state["in_channels"]
    if net is not None:
        _settle_batchnorm(net, in_ch, size)

    def validate():
        x = torch.randn(1, in_ch, size, size)
        tc = TimingConfig(threads=1, max_reps=20, min_reps=5, warmup=2).validate()
        samples, _ = measure_interleaved({"original": model, "variant": net}, x, tc, 2,
                                         progress=False)
        est = {k: estimate_trace(trace_model(m, size, in_ch), state["lut"], strict=True).total_ms
               for k, m in (("original", model), ("variant", net))}
        # the stand-in table's latencies are made up from MACs: its estimate is checked
        # for answering every operator, the measurement for running; they are not compared
        return {k: {"measured_ms": round(min(v["median_ms"]), 4),
                    "stand_in_estimate": round(est[k], 4)} for k, v in samples.items()}

    def synth():
        targets = torch.tensor([0, 1])
        res = synthesize_batch(model, targets, DIConfig(iterations=3, jitter=2), size, in_ch,
                               torch.Generator().manual_seed(0), bn_targets(model))
        return {"images": list(res.images.shape)}

    def save():
        before, after = _channels_of(model), _channels_of(net)
        channels = {n: c for n, c in after.items() if c != before.get(n)}
        path = save_checkpoint(net, tmp / "variant.pt", spec, channels=channels,
                               input_shape=(in_ch, size, size))
        x = torch.randn(2, in_ch, size, size)
        torch.save(x, tmp / "x.pt")
        # one thread there as here: another thread count sums in another order
        code = ("import torch; torch.set_num_threads(1); "
                "from hwprune.zoo import load_checkpoint; "
                f"m = load_checkpoint({str(path)!r}).module; "
                f"torch.save(m(torch.load({str(tmp / 'x.pt')!r})), {str(tmp / 'y.pt')!r})")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(run.stderr.strip().splitlines()[-1])
        with torch.no_grad():
            diff = float((torch.load(tmp / "y.pt") - net.eval()(x)).abs().max())
        if diff > 1e-5:
            raise RuntimeError(f"reloaded outputs differ by {diff:.2e}")
        return {"pruned_layers": len(channels), "max_abs_diff": diff}

    def onnx():
        res = export_model(net, tmp / "variant.onnx", size, in_ch)
        return {"max_abs_diff": res.as_dict().get("max_abs_diff")}

    for stage, fn in zip(EXTRA, (validate, synth, save, onnx)):
        if net is None or "lut" not in state:
            rec[stage] = {"ok": False, "skipped": "no variant (its stage failed)"}
            continue
        rec[stage] = tvc._stage(fn)


def survey(family: str, name: str, args, tmp: Path) -> dict:
    spec = f"timm:{name}"
    state: dict = {}
    rec = tvc.survey(spec, args, tmp, state=state, input_size=input_size(name, family, args))
    rec["family"] = family
    extra_stages(spec, rec, state, tmp)
    rec["outcome"] = tvc.outcome(rec, ALL_STAGES)
    return rec


def _line(rec: dict) -> str:
    if rec["outcome"] in ("out of scope", "not built"):
        return f"{rec['family']:24s} {rec['outcome']}: {rec['reason']}"
    head = f"{rec['family']:24s} {rec['model']:28s} {rec['outcome']:8s} @{rec['input_size']}px"
    bad = tvc.failure_text(rec, ALL_STAGES)
    return head + ("  " + bad if bad else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for the JSON")
    ap.add_argument("--families", default=None,
                    help="comma-separated timm modules [default: every one]")
    ap.add_argument("--models", default=None,
                    help="comma-separated timm model names to run instead of each family's "
                         "smallest member (e.g. the ones a user reported)")
    ap.add_argument("--input-size", type=int, default=64, help="input resolution, raised "
                    "for the families that need more")
    ap.add_argument("--step", type=int, default=64, help="coarse channel step of the grid")
    ap.add_argument("--max-keys", type=int, default=3, help="keys profile_model measures")
    ap.add_argument("--max-reps", type=int, default=5, help="timed repetitions per key")
    ap.add_argument("--no-profile", action="store_true", help="skip the timing stage")
    args = ap.parse_args(argv)
    import timm

    if args.models:
        picks = [(_module_of(n), n) for n in args.models.split(",")]
    else:
        picks = [(f, None) for f in (args.families.split(",") if args.families
                                     else timm.list_modules())]
    torch.set_num_threads(1)
    results = []
    t0 = time.perf_counter()
    for family, chosen in picks:
        name, params = (chosen, 0) if chosen else smallest_member(family)
        if name is None:
            rec = {"family": family, "outcome": "not built",
                   "reason": "no member builds without pretrained weights"}
        else:
            with torch.device("meta"):
                reason, _ = classifier_scope(name, timm.create_model(name, pretrained=False))
            if reason:
                rec = {"family": family, "model": name, "outcome": "out of scope",
                       "reason": reason, "params_m": round(params / 1e6, 2)}
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    rec = survey(family, name, args, Path(tmp))
        results.append(rec)
        print(_line(rec), flush=True)
        gc.collect()
    counts = Counter(r["outcome"] for r in results)
    in_scope = [r for r in results if r["outcome"] in ("works", "refused", "fails")]
    payload = {"machine": machine(), "timm": timm.__version__,
               "settings": {k: v for k, v in vars(args).items() if k != "out"}
               | {"out": str(args.out)},
               "counts": dict(counts), "families": len(results), "in_scope": len(in_scope),
               "works_share_of_in_scope": (round(counts.get("works", 0) / len(in_scope), 3)
                                           if in_scope else None),
               "seconds": round(time.perf_counter() - t0, 1), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out, "timm_coverage.json", payload)
    print(f"{dict(counts)}; {counts.get('works', 0)} of {len(in_scope)} in-scope families work "
          f"end to end; wrote {path}")
    return 0 if not counts.get("fails") else 1


if __name__ == "__main__":
    sys.exit(main())
