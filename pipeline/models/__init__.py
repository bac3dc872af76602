"""Built-in models: VT-ResNet (Wu et al. 2020) and the plain ResNets it is compared with."""

from pipeline.models.vt import (
    MODEL_REGISTRY,
    FilterTokenizer,
    ModelSpec,
    Projector,
    RecurrentTokenizer,
    ResNet,
    TokenTransformer,
    VTModule,
    VTResNet,
    build_model,
    create_model,
)

__all__ = [
    "MODEL_REGISTRY",
    "FilterTokenizer",
    "ModelSpec",
    "Projector",
    "RecurrentTokenizer",
    "ResNet",
    "TokenTransformer",
    "VTModule",
    "VTResNet",
    "build_model",
    "create_model",
]
