"""Models hwprune knows by name: torchvision classifiers, the embedded demo net, saved checkpoints."""

from zoo.demo import DEMO_INPUT_SIZE, DemoNet, build_demo
from zoo.models import (
    CouplingError,
    ModelError,
    ResolvedModel,
    import_weights,
    load_checkpoint,
    resolve_model,
    save_checkpoint,
    set_training,
    shrink_to,
    torchvision_model_names,
)

__all__ = [
    "DEMO_INPUT_SIZE",
    "DemoNet",
    "build_demo",
    "CouplingError",
    "ModelError",
    "ResolvedModel",
    "import_weights",
    "load_checkpoint",
    "resolve_model",
    "save_checkpoint",
    "set_training",
    "shrink_to",
    "torchvision_model_names",
]
