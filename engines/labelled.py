"""Labelled image sets (images with their MOS) and their seeded k-fold splits.

Labelled sets (:func:`load_labelled_csv`): a CSV with at least the columns ``image`` and ``mos``
(more are fine); image paths are relative to the CSV's folder, or to an ``images/`` folder beside
it (absolute paths also work).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class LabelError(ValueError):
    """A labelled-set CSV that cannot be used, with the reason."""


@dataclass(frozen=True)
class LabelledSet:
    """Images with their MOS (higher is better), as listed in a CSV."""

    csv_path: Path
    images: tuple[str, ...]  # as written in the CSV
    paths: tuple[Path, ...]  # resolved
    mos: np.ndarray  # float64 (N,)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> LabelledSet:
        idx = np.asarray(idx, dtype=np.int64)
        return LabelledSet(self.csv_path, tuple(self.images[i] for i in idx),
                           tuple(self.paths[i] for i in idx), self.mos[idx].copy())


def load_labelled_csv(csv_path: str | Path, image_column: str = "image", mos_column: str = "mos",
                      check_files: bool = True, image_root: str | Path | None = None) -> LabelledSet:
    """Read a labelled set; every problem raises :class:`LabelError` naming the file and line.

    Image paths are taken relative to ``image_root`` if given, else to the CSV's folder; when
    they are not all there but all are in an ``images/`` folder beside the CSV (the layout of
    ``datasets/livec-dev``), that folder is used.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelError(f"labels file not found: {csv_path}")
    root = Path(image_root).resolve() if image_root is not None else csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LabelError(f"{csv_path} is empty (expected a header with '{image_column}' and "
                             f"'{mos_column}')")
        header = [h.strip() for h in header]
        missing = [c for c in (image_column, mos_column) if c not in header]
        if missing:
            raise LabelError(f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                             f"found {', '.join(repr(h) for h in header)}")
        i_img, i_mos = header.index(image_column), header.index(mos_column)
        images, mos, seen = [], [], {}
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) <= max(i_img, i_mos):
                raise LabelError(f"{csv_path}:{line_no}: row has {len(row)} fields, "
                                 f"expected {len(header)}")
            name, value = row[i_img].strip(), row[i_mos].strip()
            if not name:
                raise LabelError(f"{csv_path}:{line_no}: empty '{image_column}'")
            try:
                score = float(value)
            except ValueError:
                raise LabelError(f"{csv_path}:{line_no}: '{mos_column}' is not a number: "
                                 f"{value!r}") from None
            if not math.isfinite(score):
                raise LabelError(f"{csv_path}:{line_no}: '{mos_column}' is not finite: {value!r}")
            if name in seen:
                raise LabelError(f"{csv_path}:{line_no}: image {name!r} listed twice "
                                 f"(first on line {seen[name]})")
            seen[name] = line_no
            images.append(name)
            mos.append(score)
    if not images:
        raise LabelError(f"{csv_path} has a header but no rows")
    paths = tuple(root / p for p in images)
    if image_root is None and not all(p.is_file() for p in paths):
        alt = tuple(root / "images" / p for p in images)
        if all(p.is_file() for p in alt):
            paths = alt
    if check_files:
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            more = f" (and {len(absent) - 3} more)" if len(absent) > 3 else ""
            raise LabelError(f"{csv_path}: {len(absent)} image file(s) not found: "
                             f"{', '.join(absent[:3])}{more}")
    return LabelledSet(csv_path, tuple(images), paths, np.asarray(mos, dtype=np.float64))


def kfold_indices(n: int, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded k-fold split of ``range(n)``: ``k`` pairs ``(train_idx, test_idx)``, each sorted.

    Test folds are disjoint, cover every index once, and differ in size by at most one.
    """
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} items into {k} folds")
    perm = np.random.default_rng(seed).permutation(n)
    chunks = np.array_split(perm, k)
    return [(np.sort(np.concatenate([c for j, c in enumerate(chunks) if j != i])), np.sort(chunks[i]))
            for i in range(k)]
