"""Models by builder spec (torchvision, demo, timm:NAME, package.module:callable) and saved checkpoints."""

from hwprune.zoo.demo import DEMO_INPUT_SIZE, DemoNet, build_demo
from hwprune.zoo.models import (
    CouplingError,
    ModelError,
    ResolvedModel,
    import_weights,
    load_checkpoint,
    load_weights,
    model_label,
    read_state_dict,
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
    "load_weights",
    "model_label",
    "read_state_dict",
    "resolve_model",
    "save_checkpoint",
    "set_training",
    "shrink_to",
    "torchvision_model_names",
]
