"""Folder of JPEG/PNG images -> tfds-format array_record dataset at one square resolution.

The output is a regular tfds dataset directory: `dataset_info.json`, `features.json` and shards
`prepared_images-train.array_record-0000k-of-0000n`. `tfds.builder_from_directory(dir)` reads it
without TensorFlow and `dctjax.data.sources.make_source(dir, 'train')` wraps that. Features:
`image`, (R, R, 3) uint8 stored as PNG (lossless), and with `labels='folders'` a `label` ClassLabel
whose names are the sorted first-level sub-folder names.

Each image is decoded (EXIF orientation applied), converted to RGB (RGBA, LA and transparent
palette images are composited on white), centre-cropped to a square, then resized to R x R with
PIL's bicubic filter (antialiased).

Preparation resumes: the file list is sorted and cut into fixed-size shards; each shard is written
under a temporary name and renamed once complete, and a rerun keeps complete shards. The metadata
(`dataset_info.json`, last) is written only once every shard exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESAMPLE = Image.Resampling.BICUBIC  # PIL's default resize filter, as in the DCTdiff reference
DATASET_NAME = "prepared_images"
SPLIT = "train"
STATE_DIR = "_prepare_state"  # resume bookkeeping, inside the output directory
SMALL_IMAGE_POLICIES = ("upscale", "skip")
_FORMAT_VERSION = 1
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: fast random access, as tfds writes it
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class CorruptImageError(ValueError):
    """An input file could not be decoded; the message names it."""


# ------------------------------------------------------------------------------------------------
# Image operations (also used by sources.py)
# ------------------------------------------------------------------------------------------------


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; alpha (RGBA, LA, transparent palette) is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _WIDE_GRAY_MODES:
        # 16-bit grayscale -> 8 bits; 32-bit int / float modes are taken as 16-bit when above 255.
        a = np.asarray(img, dtype=np.float64)
        wide = img.mode.startswith("I;16") or a.max(initial=0) > 255
        a = np.rint(a * (255 / 65535) if wide else a)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Centre crop to the largest square, then PIL bicubic (antialiased) resize to resolution^2."""
    w, h = img.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if s != resolution:
        img = img.resize((resolution, resolution), RESAMPLE)
    return img


def rgb_array(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|2|3|4) uint8 -> (H, W, 3) uint8; alpha is composited on white."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image, got {image.dtype}.")
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] in (2, 4):
        mode = "LA" if image.shape[-1] == 2 else "RGBA"
        return np.asarray(to_rgb(Image.fromarray(image, mode)))
    raise ValueError(f"Expected an (H, W[, 1|2|3|4]) image, got shape {image.shape}.")


def resize_array(image: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (resolution, resolution, 3) uint8 via `center_crop_resize`."""
    if image.shape[:2] == (resolution, resolution):
        return image
    return np.asarray(center_crop_resize(Image.fromarray(image), resolution))


def load_image(path: str | os.PathLike) -> Image.Image:
    """Fully decodes an image file, EXIF orientation applied; OSError/ValueError if corrupt."""
    with Image.open(path) as img:
        img.load()
        return ImageOps.exif_transpose(img)


# ------------------------------------------------------------------------------------------------
# Per-file conversion: runs in worker processes, so module level with picklable arguments.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Converted:
    status: str  # "ok", "upscaled", "small" (skipped) or "corrupt"
    png: bytes = b""
    mode: str = ""  # the source PIL mode, for the conversion counts
    error: str = ""


def _convert(task: tuple[str, int, str]) -> _Converted:
    path, resolution, small_images = task
    try:
        img = load_image(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return _Converted("corrupt", error=f"{type(e).__name__}: {e}")
    status = "ok"
    if min(img.size) < resolution:
        if small_images == "skip":
            return _Converted("small", mode=img.mode)
        status = "upscaled"
    buf = io.BytesIO()
    center_crop_resize(to_rgb(img), resolution).save(buf, format="PNG")
    return _Converted(status, png=buf.getvalue(), mode=img.mode)


def _converted_stream(tasks: list[tuple[str, int, str]], workers: int) -> Iterator[_Converted]:
    """Converted files in task order, from a process pool when workers > 1."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_convert, tasks)
        return
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent may run JAX threads
    chunksize = max(1, min(64, len(tasks) // (4 * workers)))
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_convert, tasks, chunksize=chunksize)


# ------------------------------------------------------------------------------------------------
# File listing and labels
# ------------------------------------------------------------------------------------------------


def list_images(input_dir: str | os.PathLike) -> list[str]:
    """Sorted POSIX paths, relative to input_dir, of the image files below it (hidden skipped)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Input directory {str(root)!r} does not exist.")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != STATE_DIR]
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(dirpath, f).relative_to(root).as_posix())
    return sorted(files)


def _no_labels(files: Sequence[str]) -> tuple[None, None]:
    return None, None


def _folder_labels(files: Sequence[str]) -> tuple[list[str], list[int]]:
    loose = [f for f in files if "/" not in f]
    if loose:
        raise ValueError(
            f"labels='folders' needs every image in a class sub-folder; {len(loose)} are not, "
            f"e.g. {loose[:3]}."
        )
    folders = [f.split("/", 1)[0] for f in files]
    names = sorted(set(folders))
    index = {n: i for i, n in enumerate(names)}
    return names, [index[f] for f in folders]


# labels mode -> sorted files -> (class names, label per file), or (None, None) for no labels
LABELERS: dict[str, Callable[[Sequence[str]], tuple[list[str] | None, list[int] | None]]] = {
    "none": _no_labels,
    "folders": _folder_labels,
}


# ------------------------------------------------------------------------------------------------
# Shards, resume bookkeeping, metadata
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PrepareSummary:
    """What `prepare_folder` produced; counts cover every complete shard, across resumed runs."""

    output_dir: str
    num_files: int
    num_examples: int
    num_shards: int
    shards_written: int  # by this call
    shards_reused: int  # complete from an earlier, interrupted call
    complete: bool
    num_classes: int | None
    skipped_corrupt: list[str]
    skipped_small: list[str]
    upscaled: int
    converted_modes: dict[str, int]  # source PIL mode (not RGB) -> number converted to RGB


@dataclasses.dataclass(frozen=True)
class _Layout:
    out: Path
    num_shards: int

    @property
    def state(self) -> Path:
        return self.out / STATE_DIR

    def shard(self, i: int) -> Path:
        name = f"{DATASET_NAME}-{SPLIT}.array_record-{i:05d}-of-{self.num_shards:05d}"
        return self.out / name

    def stats(self, i: int) -> Path:
        return self.state / f"shard-{i:05d}.json"

    def done(self, i: int) -> bool:
        # Stats are committed before the shard, so a shard without stats is never trusted.
        return self.shard(i).exists() and self.stats(i).exists()


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _start_or_resume(layout: _Layout, manifest: dict) -> None:
    path = layout.state / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            keys = sorted(k for k in old.keys() | manifest.keys() if old.get(k) != manifest.get(k))
            raise ValueError(
                f"{str(layout.out)!r} holds a preparation with other settings or input files "
                f"(differing: {keys}); use another --output or delete it."
            )
    elif layout.out.exists() and any(p.name != STATE_DIR for p in layout.out.iterdir()):
        raise ValueError(
            f"Output directory {str(layout.out)!r} is not empty and holds no preparation state; "
            "use a new or empty directory."
        )
    layout.state.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path, manifest)
    for stale in layout.state.glob("*.tmp"):
        stale.unlink()


def _image_features(resolution: int, class_names: list[str] | None) -> tfds.features.FeaturesDict:
    features = {
        "image": tfds.features.Image(shape=(resolution, resolution, 3), encoding_format="png")
    }
    if class_names is not None:
        features["label"] = tfds.features.ClassLabel(names=class_names)
    return tfds.features.FeaturesDict(features)


def _write_shard(
    layout: _Layout,
    i: int,
    files: Sequence[str],
    labels: Sequence[int] | None,
    converted: Iterator[_Converted],
    features: tfds.features.FeaturesDict,
    skip_corrupt: bool,
) -> None:
    """Consumes len(files) items of `converted` and commits shard i (stats first, then records)."""
    records: list[bytes] = []
    stats = {"corrupt": [], "small": [], "upscaled": 0, "modes": Counter()}
    for j, (name, r) in enumerate(zip(files, converted, strict=False)):
        if r.status == "corrupt":
            if not skip_corrupt:
                raise CorruptImageError(
                    f"Cannot decode {name!r} ({r.error}); fix or remove it, or pass "
                    "--skip_corrupt to skip such files."
                )
            logging.warning("Skipping corrupt file %s (%s).", name, r.error)
            stats["corrupt"].append(name)
        elif r.status == "small":
            stats["small"].append(name)
        else:
            stats["upscaled"] += r.status == "upscaled"
            if r.mode != "RGB":
                stats["modes"][r.mode] += 1
            example = {"image": r.png} if labels is None else {"image": r.png, "label": labels[j]}
            records.append(features.serialize_example(example))
    tmp = layout.state / (layout.shard(i).name + ".tmp")
    writer = ArrayRecordWriter(str(tmp), _WRITER_OPTIONS)
    for record in records:
        writer.write(record)
    writer.close()
    stats.update(num_examples=len(records), num_bytes=tmp.stat().st_size)
    _write_json_atomic(layout.stats(i), stats)
    os.replace(tmp, layout.shard(i))


def _summarize(
    layout: _Layout, num_files: int, class_names: list[str] | None, written: int, reused: int
) -> PrepareSummary:
    stats = [
        json.loads(layout.stats(i).read_text()) for i in range(layout.num_shards) if layout.done(i)
    ]
    modes: Counter = Counter()
    for s in stats:
        modes.update(s["modes"])
    return PrepareSummary(
        output_dir=str(layout.out),
        num_files=num_files,
        num_examples=sum(s["num_examples"] for s in stats),
        num_shards=layout.num_shards,
        shards_written=written,
        shards_reused=reused,
        complete=len(stats) == layout.num_shards,
        num_classes=None if class_names is None else len(class_names),
        skipped_corrupt=[f for s in stats for f in s["corrupt"]],
        skipped_small=[f for s in stats for f in s["small"]],
        upscaled=sum(s["upscaled"] for s in stats),
        converted_modes=dict(sorted(modes.items())),
    )


def _write_metadata(
    layout: _Layout, features: tfds.features.FeaturesDict, summary: PrepareSummary, manifest: dict
) -> None:
    stats = [json.loads(layout.stats(i).read_text()) for i in range(layout.num_shards)]
    split = tfds.core.SplitInfo(
        name=SPLIT,
        shard_lengths=[s["num_examples"] for s in stats],
        num_bytes=sum(s["num_bytes"] for s in stats),
        filename_template=None,
    )
    metadata = tfds.core.MetadataDict(
        resolution=manifest["resolution"],
        labels=manifest["labels"],
        small_images=manifest["small_images"],
        num_files=summary.num_files,
        skipped_corrupt=len(summary.skipped_corrupt),
        skipped_small=len(summary.skipped_small),
        upscaled=summary.upscaled,
        converted_modes=summary.converted_modes,
    )
    r = manifest["resolution"]
    tfds.folder_dataset.write_metadata(
        data_dir=layout.out,
        features=features,
        split_infos=[split],
        check_data=False,
        description=(
            f"Image folder centre-cropped and resized to {r}x{r} (PIL bicubic, antialiased), "
            "converted to RGB with alpha composited on white, by dctjax.data.prepare."
        ),
        metadata=metadata,
    )


def prepare_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    resolution: int,
    *,
    labels: str = "none",
    skip_corrupt: bool = False,
    small_images: str = "upscale",
    workers: int = 1,
    shard_size: int = 1024,
    max_shards: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Converts the images below input_dir into a tfds array_record dataset in output_dir.

    Args:
      input_dir: searched recursively for .jpg/.jpeg/.png/.bmp/.webp, in sorted path order.
      output_dir: a new or empty directory, or one holding an interrupted preparation with the
        same settings and files (its complete shards are kept).
      resolution: output images are (resolution, resolution, 3) uint8.
      labels: 'none', or 'folders': label = index of the first-level sub-folder (sorted names).
      skip_corrupt: skip undecodable files (counted, logged) instead of raising CorruptImageError.
      small_images: images with a shorter side below resolution: 'upscale' or 'skip' (counted).
      workers: processes decoding and resizing in parallel (1: in this process).
      shard_size: input files per shard, the unit of resume.
      max_shards: write at most this many new shards, then stop (resume later).
      progress: show a progress bar on stderr.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}.")
    if labels not in LABELERS:
        raise ValueError(f"labels must be one of {sorted(LABELERS)}, got {labels!r}.")
    if small_images not in SMALL_IMAGE_POLICIES:
        raise ValueError(
            f"small_images must be one of {SMALL_IMAGE_POLICIES}, not {small_images!r}."
        )
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}.")
    root = Path(input_dir)
    files = list_images(root)
    if not files:
        raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}.")
    class_names, file_labels = LABELERS[labels](files)
    layout = _Layout(Path(output_dir), math.ceil(len(files) / shard_size))
    manifest = {
        "format_version": _FORMAT_VERSION,
        "resolution": resolution,
        "labels": labels,
        "class_names": class_names,
        "small_images": small_images,
        "shard_size": shard_size,
        "num_files": len(files),
        "files_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest(),
    }
    _start_or_resume(layout, manifest)

    spans = [range(s, min(s + shard_size, len(files))) for s in range(0, len(files), shard_size)]
    complete = [i for i in range(layout.num_shards) if layout.done(i)]
    pending = [i for i in range(layout.num_shards) if not layout.done(i)][:max_shards]
    if pending:
        # An incomplete dataset must read as unprepared, not as one with missing shards.
        (layout.out / "dataset_info.json").unlink(missing_ok=True)
    logging.info(
        "Preparing %d files as %d shards (%d complete, %d to write) with %d worker(s).",
        len(files), layout.num_shards, len(complete), len(pending), workers,
    )  # fmt: skip
    tasks = [(str(root / files[j]), resolution, small_images) for i in pending for j in spans[i]]
    converted = _converted_stream(tasks, workers)
    features = _image_features(resolution, class_names)
    bar = tqdm.tqdm(
        total=len(files),
        initial=sum(len(spans[i]) for i in complete),
        unit="img",
        file=sys.stderr,
        disable=not progress,
        desc="prepare_data",
    )
    try:
        for i in pending:
            shard_files = [files[j] for j in spans[i]]
            shard_labels = None if file_labels is None else [file_labels[j] for j in spans[i]]
            _write_shard(layout, i, shard_files, shard_labels, converted, features, skip_corrupt)
            bar.update(len(spans[i]))
    finally:
        converted.close()  # terminates the pool on errors
        bar.close()

    summary = _summarize(layout, len(files), class_names, len(pending), len(complete))
    if not summary.complete:
        logging.info("Stopped after %d new shards; rerun the same command to resume.", len(pending))
        return summary
    _write_metadata(layout, features, summary, manifest)
    logging.info(
        "Prepared %d examples in %s: skipped %d corrupt and %d small files, upscaled %d; "
        "converted to RGB (alpha composited on white): %s.",
        summary.num_examples, layout.out, len(summary.skipped_corrupt),
        len(summary.skipped_small), summary.upscaled, summary.converted_modes or "none",
    )  # fmt: skip
    return summary
