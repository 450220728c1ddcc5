"""Feasibility hack: QualityEngine.score with the whole frame at working scale (short side <= CAP,
aspect kept, never enlarged), torch eager, one frame at a time. Import before running a bench."""
import os, numpy as np, torch
from engines import engine as E
from engines.views import resize_rgb
from engines.images import to_rgb_uint8
from engines.backbone import normalize
from engines.types import Prediction, RegionMap
CAP = int(os.environ.get("WHOLE_CAP", "540"))
torch.set_num_threads(int(os.environ.get("WHOLE_THREADS", "1")))
def score(self, frames, draws=1, frame_sizes=None):
    out = []
    sizes = frame_sizes if frame_sizes is not None else [f.shape[:2] for f in frames]
    for f, (H, W) in zip(frames, sizes):
        rgb = to_rgb_uint8(f)
        h, w = rgb.shape[:2]
        s = min(1.0, CAP / min(h, w))
        if s < 1.0:
            rgb = resize_rgb(rgb, max(32, round(h * s)), max(32, round(w * s)))
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)
        with torch.inference_mode():
            sc, m = self.model.eval()(normalize(x))
        out.append(Prediction(float(sc[0]), RegionMap(m[0].float().numpy().astype(np.float32), int(H), int(W))))
    return out
E.QualityEngine.score = score
E.QualityEngine.max_batch = property(lambda self: 8)
