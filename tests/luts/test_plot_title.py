"""`lut validate`'s plot says what it is evidence for (model, device, regime), never a path."""

from hwprune.luts.validate import plot_title

CPU = {"device_kind": "cpu", "device_name": "Intel Xeon", "dtype": "fp32", "batch": 1,
       "memory_format": "contiguous", "timing_mode": "eager", "threads": 1}


def test_a_torchvision_name_on_one_cpu_thread():
    title = plot_title({"model": "resnet18", "input_size": 224, "lut_meta": CPU}, 30)
    assert title == "resnet18 · cpu 1 thread · fp32 b1 eager\n224px, 30 variants"


def test_a_model_file_shows_as_its_name_not_its_path():
    report = {"model": "/home/me/runs/build/demo/teacher.pt", "input_size": 32,
              "lut_meta": {**CPU, "threads": 4}}
    title = plot_title(report, 8)
    assert title.startswith("teacher · cpu 4 threads · fp32 b1 eager\n"), title
    assert "/" not in title and ".pt" not in title
    assert plot_title({**report, "model": "runs/pruned_50"}, 8).startswith("pruned_50 · ")


def test_a_cuda_regime_names_the_gpu_and_the_layout():
    meta = {"device_kind": "cuda", "device_name": "NVIDIA H200", "dtype": "fp16", "batch": 32,
            "memory_format": "channels_last", "timing_mode": "graph", "threads": None}
    title = plot_title({"model": "resnet50", "input_size": 224, "lut_meta": meta}, 30)
    assert title.splitlines()[0] == "resnet50 · cuda NVIDIA H200 · fp16 b32 graph channels_last"
