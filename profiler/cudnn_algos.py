"""``--algos all`` on CUDA: time every cuDNN engine for a conv key, as the paper's protocol did.

The paper tried cuDNN's algorithms for each key and kept the fastest. Here
cuDNN's own execution plans are enumerated through the cudnn-frontend Python
package (``pip install nvidia-cudnn-frontend``): heuristics modes A and
FALLBACK give the candidate engines, each is built, timed with CUDA events
under the same adaptive protocol (eager, or captured in a CUDA graph), and the
plan's engine tag is recorded. Grouped and depthwise convs are expressed, as in
torch, by the weight shape ``[c_out, c_in / groups, kh, kw]``.

What each timed call does is what ``nn.Conv2d`` does on cuDNN: the convolution,
then, for a key with a bias, ``y += bias`` as a separate kernel (torch adds the
bias after ``cudnn_convolution`` the same way), and, with cold weights, the next
of ``weight_copies`` copies of the weights (and bias) on each call, as ``build_op``.

Streams: a cuDNN-frontend handle launches on the one stream it is bound to
(``cudnn.set_stream``), not on torch's current stream. Every plan is therefore
run, timed and, in graph mode, captured on one side stream that the handle is
bound to; bound to torch's default stream instead, a graph capture (which runs
on another stream) would record none of the plan's work.

Imports: this module uses ``profiler.clock`` (the timing protocol), never
``profiler.timing``, which imports it: one direction, no cycle.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch

from hwprune.profiler.clock import Stats, TimingConfig, TimingError, cudnn_frontend, time_callable
from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.ops import DTYPES, weight_copies


def engine_call(execute: Callable[[dict], None], packs: Sequence[dict], y: torch.Tensor,
                biases: Sequence[torch.Tensor | None]) -> Callable[[], torch.Tensor]:
    """One timed call of an engine: ``execute(pack)`` writes the conv into ``y``, then the bias.

    ``packs[i]`` and ``biases[i]`` are the i-th copy of the weights and bias; each call
    takes the next, round robin, so that with cold weights every copy is read in turn.
    """
    if len(packs) != len(biases) or not packs:
        raise ValueError("need one bias entry (or None) per variant pack")
    turn = itertools.cycle(list(zip(packs, [None if b is None else b.view(1, -1, 1, 1)
                                            for b in biases])))

    def call() -> torch.Tensor:
        pack, bias = next(turn)
        execute(pack)
        if bias is not None:
            y.add_(bias)  # in place, as torch's cuDNN path adds a conv's bias
        return y
    return call


class _ConvGraph:
    """The cuDNN-frontend graph of one conv key and its tensors, bound to ``stream``.

    The handle is created here and must be released with ``close()`` (cuDNN handles
    hold device memory and streams; one per key would leak over a scan).
    """

    def __init__(self, key: OpKey, cfg: TimingConfig, stream: torch.cuda.Stream,
                 copies: int = 1) -> None:
        cudnn = cudnn_frontend()
        tdtype = DTYPES[cfg.dtype]
        io = {torch.float32: cudnn.data_type.FLOAT, torch.float16: cudnn.data_type.HALF,
              torch.bfloat16: cudnn.data_type.BFLOAT16}[tdtype]
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.cudnn, self.key, self.stream = cudnn, key, stream
        with torch.cuda.stream(stream):  # allocated on the stream that will use them
            self.x = torch.randn(cfg.batch, key.c_in, key.in_h, key.in_w, device="cuda",
                                 dtype=tdtype).contiguous(memory_format=fmt)
            w_shape = (key.c_out, key.c_in // key.groups, key.kernel_h, key.kernel_w)
            self.weights = [torch.randn(w_shape, device="cuda", dtype=tdtype)
                            .contiguous(memory_format=fmt) for _ in range(copies)]
            self.biases = [torch.randn(key.c_out, device="cuda", dtype=tdtype)
                           if key.bias else None for _ in range(copies)]
            ref = torch.nn.functional.conv2d(self.x, self.weights[0], None,
                                             (key.stride_h, key.stride_w), (key.pad_h, key.pad_w),
                                             (key.dil_h, key.dil_w), key.groups)
            self.y = torch.empty_like(ref)
        self.handle = cudnn.create_handle()
        try:
            cudnn.set_stream(handle=self.handle, stream=stream.cuda_stream)
            g = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                              compute_data_type=cudnn.data_type.FLOAT, handle=self.handle)
            w = self.weights[0]
            self.X = g.tensor(name="X", dim=list(self.x.size()), stride=list(self.x.stride()),
                              data_type=io)
            self.W = g.tensor(name="W", dim=list(w.size()), stride=list(w.stride()), data_type=io)
            self.Y = g.conv_fprop(image=self.X, weight=self.W, padding=[key.pad_h, key.pad_w],
                                  stride=[key.stride_h, key.stride_w],
                                  dilation=[key.dil_h, key.dil_w])
            self.Y.set_output(True).set_data_type(io).set_dim(list(self.y.size())) \
                .set_stride(list(self.y.stride()))
            g.validate()
            g.build_operation_graph()
            g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            self.graph = g
        except BaseException:
            self.close()
            raise

    def plan_count(self) -> int:
        return int(self.graph.get_execution_plan_count())

    def call(self, index: int) -> Callable[[], torch.Tensor] | None:
        """The timed call of plan ``index``, or None when cuDNN cannot build it for this key."""
        try:
            self.graph.build_plan_at_index(index)
        except Exception:  # unsupported for this shape: cuDNN says so by raising
            return None
        with torch.cuda.stream(self.stream):
            ws = torch.empty(self.graph.get_workspace_size_plan_at_index(index), device="cuda",
                             dtype=torch.uint8)
        packs = [{self.X: self.x, self.W: w, self.Y: self.y} for w in self.weights]

        def execute(pack: dict) -> None:
            self.graph.execute_plan_at_index(pack, ws, index, handle=self.handle)
        return engine_call(execute, packs, self.y, self.biases)

    def plan_name(self, index: int) -> str:
        return str(self.graph.get_plan_name_at_index(index))

    def close(self) -> None:
        if getattr(self, "handle", None) is None:
            return
        torch.cuda.synchronize()  # nothing may still run on the handle's stream
        self.graph = None
        handle, self.handle = self.handle, None
        self.cudnn.destroy_handle(handle)


def count_conv_engines(key: OpKey, cfg: TimingConfig) -> int:
    """Candidate cuDNN plans for ``key`` (heuristics A and FALLBACK), before any is built.

    An upper bound on the engines ``time_conv_engines`` times: a plan cuDNN cannot
    build for the shape is skipped there.
    """
    try:
        conv = _ConvGraph(key, cfg, torch.cuda.Stream(), copies=1)
    except Exception:  # only the ETA asks: a key cuDNN cannot plan is timed as one engine
        return 1
    try:
        return max(1, conv.plan_count())
    except Exception:
        return 1
    finally:
        conv.close()


def time_conv_engines(key: OpKey, cfg: TimingConfig) -> list[Stats]:
    """Stats of every cuDNN engine that supports ``key``; the algo field names the engine."""
    stream = torch.cuda.Stream()
    copies = weight_copies(key, cfg.dtype, cfg.cold_bytes)
    conv = _ConvGraph(key, cfg, stream, copies)
    # A plan that builds but cannot run this shape raises at execute (or ends the capture).
    failed = (RuntimeError, getattr(conv.cudnn, "cudnnGraphNotSupportedError", RuntimeError))
    results, skipped = [], []
    try:
        for i in range(conv.plan_count()):
            try:  # building a plan's workspace can fail too (out of memory): skip that plan
                run = conv.call(i)
                if run is not None:
                    results.append(time_callable(run, cfg, f"cudnn:{conv.plan_name(i)}",
                                                 copies, stream))
            except failed as exc:  # counted in the table (profiler.run), not dropped unseen
                skipped.append(f"{_plan_name(conv, i)}: {type(exc).__name__}: "
                               f"{(str(exc).strip().splitlines() or [''])[0][:160]}")
    finally:
        conv.close()
    if not results:
        raise TimingError(f"no cuDNN engine supports {key}"
                          + (f" ({len(skipped)} failed: {skipped[0]})" if skipped else ""))
    for r in results:
        r.skipped = tuple(skipped)
    return results


def _plan_name(conv, index: int) -> str:
    try:
        return conv.plan_name(index)
    except Exception:  # the failure may have left the plan unnamed
        return f"plan {index}"
