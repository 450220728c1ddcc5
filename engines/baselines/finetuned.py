"""``lite0-finetune``: the plain Lite0 fine-tuned end to end in each fold (BRIEF §3's recipe).

Not a frozen-feature baseline: the network itself is trained on the fold's training images
(``engines.train.native``: random native 224x224 crops with flips, BatchNorm frozen, L1 + PLCC,
8 epochs) and scored on the held-out fold as the mean over ``draws`` seeded crops. It is the
floor the paper architectures must beat; a fold takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME = "lite0-finetune"


def cross_validate(paths: Sequence[str | Path], mos: np.ndarray, splits, draws: int = 5, epochs: int = 8,
                   seed: int = 0, progress: bool = True) -> list[np.ndarray]:
    """Predictions for each ``(train, test)`` split's test images, in split order."""
    import torch

    from ..images import read_rgb
    from ..train import native
    from ..views import InputView

    args = native.build_parser().parse_args(["--model", "plain", "--view", "crops", "--out", "-",
                                             "--epochs", str(epochs), "--seed", str(seed)]
                                            + ([] if progress else ["--no-progress"]))
    view = InputView(mode="crops", size=args.size)
    images = [read_rgb(p) for p in paths]
    mos = np.asarray(mos, dtype=np.float64)
    out = []
    for i, (train, test) in enumerate(splits):
        torch.manual_seed(seed + i)
        model = native.PlainLite0(pretrained=True)
        native.train(model, images, mos, np.asarray(train), view, args, desc=f"{NAME} fold {i}")
        out.append(native.predict(model, images, np.asarray(test), view, draws))
    return out
