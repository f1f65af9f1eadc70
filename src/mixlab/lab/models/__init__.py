"""The papers' networks and small fast ones, all with named stages.

```python
model = build_model("preact_resnet18", num_classes=10, in_channels=3, input_size=(32, 32))
model.stages                                   # ("layer1", "layer2", "layer3", "layer4")
logits = model(x)                              # (B, 10)
logits, feats = model(x, return_features=True)  # feats["layer3"]: (B, 256, 8, 8)
```

Every model is a :class:`StagedNet`: a stem, stage modules registered under the names in
``model.stages`` (forward order), and a head. A forward hook on a stage may replace its output
(ManifoldMix, AutoMix).
"""

from .base import PoolHead, StagedNet, count_parameters, init_weights
from .fast import FastResNet, fast_resnet
from .registry import MODEL_NAMES, build_model
from .resnet import PreActBlock, PreActResNet, WideResNet, preact_resnet18, wrn28_10
from .small import MLP, SmallCNN, cnn1d, cnn8, cnn28, mlp

__all__ = [
    "MODEL_NAMES",
    "build_model",
    "count_parameters",
    "StagedNet",
    "PoolHead",
    "init_weights",
    "PreActBlock",
    "PreActResNet",
    "WideResNet",
    "FastResNet",
    "SmallCNN",
    "MLP",
    "preact_resnet18",
    "wrn28_10",
    "fast_resnet",
    "cnn28",
    "cnn8",
    "cnn1d",
    "mlp",
]
