"""``--algos all`` on CUDA: time every cuDNN engine for a conv key, as the paper's protocol did.

The paper tried cuDNN's algorithms for each key and kept the fastest. Here
cuDNN's own execution plans are enumerated through the cudnn-frontend Python
package (``pip install nvidia-cudnn-frontend``): heuristics modes A and
FALLBACK give the candidate engines, each is built, timed with CUDA events
under the same adaptive protocol, and the plan's engine tag is recorded.
Grouped and depthwise convs are expressed, as in torch, by the weight shape
``[c_out, c_in / groups, kh, kw]``.
"""

from __future__ import annotations

import torch

from profiler.keyspace import OpKey
from profiler.ops import DTYPES
from profiler.timing import Stats, TimingConfig, TimingError, time_callable


def _cudnn():
    try:
        import cudnn  # the cudnn-frontend Python package
    except ImportError:
        raise TimingError("--algos all on cuda needs the cudnn-frontend Python package "
                          "(pip install nvidia-cudnn-frontend); or use --algos auto, which "
                          "lets cudnn.benchmark pick the fastest algorithm") from None
    return cudnn


def time_conv_engines(key: OpKey, cfg: TimingConfig) -> list[Stats]:
    """Stats of every cuDNN engine that supports ``key``; the algo field names the engine."""
    cudnn = _cudnn()
    tdtype = DTYPES[cfg.dtype]
    io = {torch.float32: cudnn.data_type.FLOAT, torch.float16: cudnn.data_type.HALF,
          torch.bfloat16: cudnn.data_type.BFLOAT16}[tdtype]
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = torch.randn(cfg.batch, key.c_in, key.in_h, key.in_w, device="cuda",
                    dtype=tdtype).contiguous(memory_format=fmt)
    w = torch.randn(key.c_out, key.c_in // key.groups, key.kernel_h, key.kernel_w,
                    device="cuda", dtype=tdtype).contiguous(memory_format=fmt)
    ref = torch.nn.functional.conv2d(x, w, None, (key.stride_h, key.stride_w),
                                     (key.pad_h, key.pad_w), (key.dil_h, key.dil_w), key.groups)
    y = torch.empty_like(ref)
    handle = cudnn.create_handle()
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
    graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    X = graph.tensor(name="X", dim=list(x.size()), stride=list(x.stride()), data_type=io)
    W = graph.tensor(name="W", dim=list(w.size()), stride=list(w.stride()), data_type=io)
    Y = graph.conv_fprop(image=X, weight=W, padding=[key.pad_h, key.pad_w],
                         stride=[key.stride_h, key.stride_w], dilation=[key.dil_h, key.dil_w])
    Y.set_output(True).set_data_type(io).set_dim(list(y.size())).set_stride(list(y.stride()))
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    results = []
    for i in range(graph.get_execution_plan_count()):
        try:
            graph.build_plan_at_index(i)
        except Exception:  # unsupported for this shape: cuDNN says so by raising
            continue
        ws = torch.empty(graph.get_workspace_size_plan_at_index(i), device="cuda",
                         dtype=torch.uint8)
        pack = {X: x, W: w, Y: y}
        tag = str(graph.get_plan_name_at_index(i))

        def run(i=i, ws=ws, pack=pack):
            graph.execute_plan_at_index(pack, ws, i, handle=handle)

        try:
            results.append(time_callable(run, cfg, f"cudnn:{tag}"))
        except RuntimeError:
            continue
    if not results:
        raise TimingError(f"no cuDNN engine supports {key}")
    return results
