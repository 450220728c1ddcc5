"""Evaluate native.py fold checkpoints with other test views: 5 native 224 crops (as trained),
the whole image at native scale, the whole image resized to 384 (v1's view)."""
import sys, json, argparse, numpy as np, torch
sys.path.insert(0, "/work/main")
from engines.train.native import build_model, predict
from engines.labelled import kfold_indices, load_labelled_csv
from engines.images import read_rgb
from engines.metrics import compute_metrics
from engines.backbone import normalize
from engines.views import InputView
from pathlib import Path
from PIL import Image
ap = argparse.ArgumentParser()
ap.add_argument("--out"); ap.add_argument("--model"); ap.add_argument("--folds", default="0,1,2,3,4")
ap.add_argument("--threads", type=int, default=1); ap.add_argument("--json")
a = ap.parse_args()
torch.set_num_threads(a.threads)
data = load_labelled_csv(str(Path("/work/shared/datasets/livec-dev/labels.csv")))
images = [read_rgb(p) for p in data.paths]
mos = np.asarray(data.mos, dtype=np.float64)
splits = kfold_indices(len(images), 5)
@torch.no_grad()
def whole(model, idx, size=None):
    out = []
    for i in idx:
        im = images[i]
        if size:
            h, w = im.shape[:2]; s = size / min(h, w)
            im = np.asarray(Image.fromarray(im).resize((round(w * s), round(h * s)), Image.BILINEAR))
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float().div_(255.0)
        out.append(float(model(normalize(x))[0].float()))
    return np.array(out)
res = {}
for f in [int(x) for x in a.folds.split(",")]:
    ck = Path(a.out) / f"{a.model}_fold{f}.ckpt"
    if not ck.exists(): continue
    model = build_model(a.model, "imagenet")
    model.load_state_dict(torch.load(ck, map_location="cpu", weights_only=True)["model"]); model.eval()
    te = splits[f][1]
    r = {}
    r["crops5"] = compute_metrics(predict(model, images, te, InputView(mode="crops", size=224), 5), mos[te])["srocc"]
    r["whole_native"] = compute_metrics(whole(model, te), mos[te])["srocc"]
    r["whole_384"] = compute_metrics(whole(model, te, 384), mos[te])["srocc"]
    for S in (448, 512):
        r[f"resize_{S}"] = compute_metrics(whole(model, te, S), mos[te])["srocc"]
    res[f] = r; print(a.model, f, {k: round(v, 4) for k, v in r.items()}, flush=True)
for k in ("crops5", "whole_native", "whole_384", "resize_448", "resize_512"):
    print(k, "median", round(float(np.median([r[k] for r in res.values()])), 4))
if a.json: Path(a.json).write_text(json.dumps(res))
