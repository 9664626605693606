"""Batch review helpers: folders inside the configured data roots only, safe zip extraction, filtering and
per-patient aggregation of a scored table."""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd

from leukoview.models.differential import cells, flagged
from leukoview.primitives.images import IMAGE_SUFFIXES, ImageError, find_images, has_image_suffix, load_image
from leukoview.primitives.vocab import FLAGGED_UNIDENTIFIED

MAX_ZIP_FILES = 20_000
MAX_ZIP_BYTES = 2 * 1024**3  # after extraction
MAX_ZIP_RATIO = 200  # uncompressed / compressed per member: beyond this it is a zip bomb
BLAST_REFERENCE = 0.20  # the WHO blast threshold for acute leukaemia (>= 20 % blasts), drawn on the differential


class BoundaryError(ValueError):
    """A path or archive member would leave the folder it must stay in."""


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths, ``..`` and symlinks that lead outside ``root``."""
    root = Path(root).resolve()
    rel = str(relative).strip()
    if not rel or rel == ".":
        return root
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BoundaryError(f"{relative!r}: absolute paths are not allowed; choose a folder inside the data root")
    if ".." in p.parts:
        raise BoundaryError(f"{relative!r}: '..' is not allowed; choose a folder inside the data root")
    target = (root / Path(*p.parts)).resolve()
    if not target.is_relative_to(root):
        raise BoundaryError(f"{relative!r} leads outside the data root (a symbolic link?)")
    return target


def image_folders(roots: list[Path], *, max_depth: int = 4, limit: int = 500) -> list[tuple[int, str, int]]:
    """Folders with images in their subtree, under each root: (root index, path relative to root ('.' for the
    root itself), number of images under it, recursively), as :func:`leukoview.primitives.images.find_images` finds them
    (so nothing outside the roots is listed or counted)."""
    out = []
    for i, root in enumerate(roots):
        root = Path(root)
        if not root.is_dir():
            continue
        counts: dict[str, int] = {}
        for p in find_images(root):
            parts = p.parent.relative_to(root).parts
            for depth in range(min(len(parts), max_depth) + 1):  # credit every listed ancestor
                key = Path(*parts[:depth]).as_posix() if depth else "."
                counts[key] = counts.get(key, 0) + 1
        out += [(i, rel, n) for rel, n in sorted(counts.items())]
    return out[:limit]


def extract_zip(data: bytes, dest: Path, *, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES
                ) -> tuple[list[Path], list[str]]:
    """Extract the image members of a zip into ``dest``; returns (extracted files, refused members with reason).

    Refuses members that would land outside ``dest`` (``../``, absolute), symlink members, and stops at the
    file-count and total-size limits (a zip bomb raises :class:`BoundaryError`).
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, OverflowError, OSError):
        raise BoundaryError("the upload is not a valid zip archive") from None
    extracted, refused, total = [], [], 0
    with zf:
        unnamed = [m for m in zf.infolist() if not m.filename]  # a damaged entry (fuzzing found one)
        refused += [f"member {i + 1}: has no name; not extracted" for i, _ in enumerate(unnamed)]
        members = [m for m in zf.infolist() if m.filename and not m.filename.endswith("/")]
        if len(members) > max_files:
            raise BoundaryError(f"the zip holds {len(members)} files; the limit is {max_files}")
        for m in members:
            name = m.filename
            if (m.external_attr >> 16) & 0o170000 == 0o120000:
                refused.append(f"{name}: symbolic links are not extracted")
                continue
            try:
                target = resolve_inside(dest, name)
            except BoundaryError:
                refused.append(f"{name}: would be written outside the extraction folder; refused")
                continue
            if not has_image_suffix(name):
                refused.append(f"{name}: not an image file type ({', '.join(IMAGE_SUFFIXES)})")
                continue
            if m.compress_size and m.file_size / m.compress_size > MAX_ZIP_RATIO and m.file_size > 10 * 2**20:
                raise BoundaryError(f"{name}: compression ratio {m.file_size // m.compress_size}:1 looks like a "
                                    "zip bomb; extraction stopped")
            total += m.file_size
            if total > max_bytes:
                raise BoundaryError(f"the zip expands beyond {max_bytes / 2**30:.1f} GB; extraction stopped")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, open(target, "wb") as out:
                    written = 0
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > m.file_size + 1024:  # the header lied about the size
                            raise BoundaryError(f"{name}: expands beyond its declared size; extraction stopped")
                        out.write(chunk)
            except BoundaryError:
                raise
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, ValueError,
                    EOFError, OSError) as e:  # a damaged, encrypted or foreign member
                target.unlink(missing_ok=True)
                refused.append(f"{name}: cannot be extracted ({type(e).__name__}: {e})")
                continue
            extracted.append(target)
    return extracted, refused


SEEN_FILTERS = ("all images", "only images new to the model", "only images seen in training")


def filter_scores(df: pd.DataFrame, *, score_range=(0.0, 1.0), classes=None, flagged_only: bool = False,
                  include_errors: bool = False, seen: str = SEEN_FILTERS[0]) -> pd.DataFrame:
    """Rows of a scored table within a suspicion range, predicted class set, OOD filter and training-set
    membership filter (:data:`SEEN_FILTERS`; "seen" = in the model's train or validation split)."""
    ok = df["error"] == ""
    keep = ok & df["suspicion"].between(score_range[0], score_range[1])
    if classes:
        keep &= df["predicted"].isin(list(classes))
    if flagged_only:
        keep &= df["ood_flag"] == True  # noqa: E712 (object column of bools)
    if seen != SEEN_FILTERS[0] and "in_training" in df:
        was_seen = df["in_training"].isin(["train", "val"])
        keep &= was_seen if seen == SEEN_FILTERS[2] else ~was_seen
    if include_errors:
        keep |= ~ok
    return df[keep]


def differential(df: pd.DataFrame, classes: list[str], positive: list[str]) -> tuple[pd.DataFrame, dict]:
    """The differential count of a scored folder: cells per predicted type, and their percentages among the
    classed cells. Cells the model flags as out of distribution are *unidentified* and, as in clinical
    cell-review software, left out of the percentages; unreadable files are not cells. Returns the table (one row
    per type, then the unidentified row) and a summary: classed cells, blast (positive-type) count and %, and
    whether it reaches :data:`BLAST_REFERENCE`."""
    ok = df[cells(df)]  # unreadable files and images the input gate refused are not cells
    unplaced = flagged(ok).to_numpy()
    classed = ok[~unplaced]
    counts = classed["predicted"].value_counts()
    n = int(len(classed))
    rows = [{"type": c, "count": int(counts.get(c, 0)),
             "percent": 100 * counts.get(c, 0) / n if n else float("nan"), "positive": c in positive}
            for c in classes]
    rows.append({"type": FLAGGED_UNIDENTIFIED, "count": int(unplaced.sum()), "percent": float("nan"),
                 "positive": False})
    blasts = int(sum(counts.get(c, 0) for c in positive))
    share = blasts / n if n else float("nan")
    summary = {"cells": int(len(ok)), "classed": n, "unidentified": int(unplaced.sum()),
               "not_a_smear": int((df["error"] == "").sum() - len(ok)),
               "unreadable": int((df["error"] != "").sum()), "positive_types": list(positive),
               "positive_count": blasts, "positive_percent": 100 * share if n else float("nan"),
               "reference_percent": 100 * BLAST_REFERENCE,
               "at_or_above_reference": bool(n and share >= BLAST_REFERENCE)}
    return pd.DataFrame(rows), summary


def thumbnail_jpeg(path: Path, size: int = 72, *, quality: int = 80) -> bytes:
    """A small JPEG of an image file (at most ``size`` px a side); empty bytes if unreadable."""
    try:
        img = load_image(path)
    except (ImageError, OSError):
        return b""
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_uri(path: Path, size: int = 72) -> str:
    """:func:`thumbnail_jpeg` as a data URI (for table thumbnails); empty string if unreadable."""
    import base64

    data = thumbnail_jpeg(path, size)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else ""


def save_uploads(files: list[tuple[str, bytes]], dest: Path) -> list[Path]:
    """Write uploaded (name, bytes) pairs into ``dest`` under their base names (no directories from the
    client are trusted); duplicate names get a numeric suffix."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files:
        base = Path(name.replace("\\", "/")).name or "upload"
        target, k = dest / base, 1
        while target in out:
            target = dest / f"{Path(base).stem}_{k}{Path(base).suffix}"
            k += 1
        target.write_bytes(data)
        out.append(target)
    return out


def upload_batch(files: list[tuple[str, bytes]], uploads_dir: Path) -> tuple[str, Path, list[str]]:
    """Store an upload (image files and/or zips) as a batch folder; returns (batch id, folder, refused notes)."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    bid = f"upload:{digest.hexdigest()[:16]}"
    folder = Path(uploads_dir) / bid.split(":", 1)[1]
    refused: list[str] = []
    plain = [(n, d) for n, d in files if not n.lower().endswith(".zip")]
    save_uploads(plain, folder)
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                _, bad = extract_zip(data, folder / Path(name).stem)
                refused += [f"{name}: {b}" for b in bad]
            except BoundaryError as e:
                refused.append(f"{name}: {e}")
    return bid, folder, refused


SORTS = {"suspicion ↓": ("suspicion", False), "suspicion ↑": ("suspicion", True), "file": ("file", True),
         "ood_score ↓": ("ood_score", False)}


def sort_scores(df: pd.DataFrame, how: str) -> pd.DataFrame:
    col, ascending = SORTS[how]
    return df.sort_values([col, "file"], ascending=[ascending, True], kind="stable")


def with_decisions(df: pd.DataFrame, decisions: pd.DataFrame | None) -> pd.DataFrame:
    """Add the current review decision of each file (empty when none or when the store is unavailable)."""
    out = df.copy()
    if decisions is None or decisions.empty:
        out["review"] = ""
        return out
    current = decisions.set_index("file")
    out["review"] = [f"{current.at[f, 'action']} ({current.at[f, 'reviewer']})" if f in current.index else ""
                     for f in out["file"]]
    return out


def table_for_page(df: pd.DataFrame, folder: Path, *, thumbnails: int = 300) -> pd.DataFrame:
    """The columns the batch table shows; thumbnails for the first ``thumbnails`` rows (cost grows with rows)."""
    cols = ["file", "suspicion", "predicted", "decision", "ood_flag", "ood_score",
            *(c for c in ("in_training", "cell_found") if c in df), "review"]
    out = df[cols].copy()
    out.insert(0, "thumbnail", [thumbnail_uri(Path(folder) / f) if k < thumbnails else ""
                                for k, f in enumerate(out["file"])])
    out["ood_flag"] = out["ood_flag"].astype(bool)
    return out.reset_index(drop=True)
