"""Random-access image sources, chosen by name: `make_source(name, split, ...)`.

Every source has `len()` and `__getitem__`/`__getitems__` returning dicts
{'image': (H, W, 3) uint8, 'label': () int32} (label 0 where the dataset has none), plus
`num_classes` (None when unlabelled). Names:
  - 'synthetic': the built-in shapes dataset (`dctjax.data.synthetic`);
  - 'idx': MNIST-format idx files in data_dir (default: Debian's Fashion-MNIST location);
  - 'folder' with data_dir=DIR, or DIR itself: a dataset written by `launch/prepare_data.py`;
  - 'photo_crops': random crops of the natural photos bundled with scikit-image (needs
    `pip install scikit-image`), labelled by photo: small real colour data that needs no download;
  - any tfds builder name ('cifar10', 'celeb_a', 'imagenet_resized/64x64', 'mnist', ...), read
    like `tfds.data_source` (array_record random access, no TensorFlow). Per-dataset presets
    (`TFDS_PRESETS`) add crops and default resolutions; grayscale becomes RGB.
With a resolution, images are centre-cropped and resized (PIL bicubic, antialiased) when their size
differs. Sources are picklable, so grain worker processes can use them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import tensorflow_datasets as tfds

from dctjax.data import prepare, synthetic
from dctjax.registry import Registry

Example = dict[str, np.ndarray]


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset's files are missing; the message says which command prepares them."""


class UnknownSplitError(ValueError):
    """The split does not exist; the message lists the available ones."""


class UnknownDatasetError(ValueError):
    """The name is neither a registered source, a prepared folder, nor a tfds builder."""


class RandomAccessSource(Protocol):
    num_classes: int | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Example: ...

    def __getitems__(self, indices: Sequence[int]) -> list[Example]: ...


@dataclasses.dataclass(frozen=True)
class TfdsPreset:
    """Per-tfds-dataset preprocessing: a fixed crop (top, left, height, width) applied before the
    resize, and the default output resolution."""

    crop: tuple[int, int, int, int] | None = None
    resolution: int | None = None


# DCTdiff/U-ViT CelebA: the 128x128 box centred at row 121, column 89 of the 218x178 image.
CELEBA_CROP = (121 - 64, 89 - 64, 128, 128)

TFDS_PRESETS: dict[str, TfdsPreset] = {
    "cifar10": TfdsPreset(resolution=32),
    "celeb_a": TfdsPreset(crop=CELEBA_CROP, resolution=64),
    "imagenet_resized/64x64": TfdsPreset(resolution=64),
    "imagenet_resized/32x32": TfdsPreset(resolution=32),
}


class ImageSource:
    """Wraps a random-access source of feature dicts (e.g. a tfds data source) into the common
    {'image': (R, R, 3) uint8, 'label': () int32} format."""

    def __init__(
        self,
        source: Any,
        *,
        label_key: str | None = None,
        num_classes: int | None = None,
        crop: tuple[int, int, int, int] | None = None,
        resolution: int | None = None,
        name: str = "",
    ):
        self._source = source
        self.label_key = label_key
        self.num_classes = num_classes
        self.crop = crop
        self.resolution = resolution
        self.name = name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example:
        ex = self._source[int(index)]
        image = prepare.rgb_array(ex["image"])
        if self.crop is not None:
            top, left, h, w = self.crop
            image = image[top : top + h, left : left + w]
        if self.resolution is not None:
            image = prepare.resize_array(image, self.resolution)
        label = 0 if self.label_key is None else ex[self.label_key]
        return {"image": image, "label": np.int32(label)}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (
            f"ImageSource({self.name!r}, len={len(self)}, resolution={self.resolution}, "
            f"crop={self.crop}, num_classes={self.num_classes})"
        )


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------

SourceFactory = Callable[..., RandomAccessSource]
_SOURCES: Registry[SourceFactory] = Registry("source")


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Registers factory(split, data_dir=None, resolution=None, **kwargs) under `name`."""
    return _SOURCES.register(name)


def registered_sources() -> list[str]:
    return _SOURCES.names()


@register_source("synthetic")
def _synthetic_source(
    split: str, data_dir: str | None = None, resolution: int | None = None, **kwargs: Any
) -> synthetic.SyntheticShapes:
    del data_dir
    if split not in synthetic.SPLITS:
        raise UnknownSplitError(
            f"Dataset 'synthetic' has no split {split!r}; "
            f"available splits: {sorted(synthetic.SPLITS)}."
        )
    return synthetic.SyntheticShapes(
        32 if resolution is None else resolution, split=split, **kwargs
    )


@register_source("folder")
def _folder_source(
    split: str, data_dir: str | None = None, resolution: int | None = None
) -> ImageSource:
    if data_dir is None:
        raise ValueError("The 'folder' source needs data_dir=<directory written by prepare_data>.")
    return folder_source(data_dir, split, resolution)


IDX_SPLITS = {"train": "train", "test": "t10k"}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An MNIST-format idx file (optionally .gz) as a uint8 array: (N, H, W) images or (N,) labels."""
    import gzip

    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic number).")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {array.size} values for the header's shape {tuple(dims)}.")
    return array.reshape(dims)


class IdxSource:
    """MNIST-format idx files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) in `data_dir`,
    e.g. Fashion-MNIST from Debian's `dataset-fashion-mnist`. Grey becomes RGB; with a resolution
    the 28x28 images are resized (PIL bicubic). The files are read on first access (per process)."""

    def __init__(self, data_dir: str, split: str, resolution: int | None = None, num_classes=10):
        if split not in IDX_SPLITS:
            raise UnknownSplitError(
                f"idx data has no split {split!r}; available splits: {sorted(IDX_SPLITS)}."
            )
        stem = IDX_SPLITS[split]
        self.paths = []
        for kind in ("images-idx3", "labels-idx1"):
            found = [Path(data_dir) / f"{stem}-{kind}-ubyte{ext}" for ext in (".gz", "")]
            found = [p for p in found if p.is_file()]
            if not found:
                raise DatasetNotPreparedError(
                    f"No {stem}-{kind}-ubyte[.gz] in {data_dir}. Fashion-MNIST: `apt-get install "
                    f"dataset-fashion-mnist` puts it in {FASHION_MNIST_DIR}."
                )
            self.paths.append(found[0])
        self.resolution = resolution
        self.num_classes = num_classes
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._len = int(np.frombuffer(_idx_header(self.paths[1]), ">u4", count=1, offset=4)[0])

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (read_idx(self.paths[0]), read_idx(self.paths[1]))
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Example:
        images, labels = self._load()
        image = np.repeat(images[int(index)][..., None], 3, axis=-1)
        if self.resolution is not None and image.shape[0] != self.resolution:
            image = prepare.resize_array(image, self.resolution)
        return {"image": image, "label": np.int32(labels[int(index)])}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return [self[i] for i in indices]


def _idx_header(path: Path) -> bytes:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read(8)


@register_source("idx")
def _idx_source(
    split: str, data_dir: str | None = None, resolution: int | None = None, **kwargs: Any
) -> IdxSource:
    return IdxSource(data_dir or FASHION_MNIST_DIR, split, resolution, **kwargs)


PHOTO_CROPS_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina",
)  # fmt: skip
PHOTO_CROPS_SPLITS = {"train": (50_000, 0), "test": (10_000, 1)}  # (default size, seed offset)


def _skimage_photos(names: Sequence[str]) -> list[np.ndarray]:
    try:
        from skimage import data as skdata
    except ImportError as e:
        raise ImportError(
            "The 'photo_crops' source reads the photos bundled with scikit-image: "
            "pip install scikit-image"
        ) from e
    return [np.ascontiguousarray(getattr(skdata, n)()[..., :3]) for n in names]


class PhotoCrops:
    """Square crops of scikit-image's bundled colour photos (`PHOTO_CROPS_PHOTOS`), label = photo.

    Item i is a deterministic function of (seed, split, i): photo i % len(photos), a crop side
    drawn log-uniformly in [min_side, max_fraction * min(H, W)] pixels at a uniform position,
    resized to `resolution` (PIL bicubic, antialiased). Natural colour statistics (textures,
    edges, smooth regions) at any resolution, offline. The photos load on first access.
    """

    def __init__(
        self,
        split: str,
        resolution: int | None = None,
        num_examples: int | None = None,
        seed: int = 0,
        photos: Sequence[str] = PHOTO_CROPS_PHOTOS,
        min_side: int = 32,
        max_fraction: float = 0.5,
    ):
        if split not in PHOTO_CROPS_SPLITS:
            raise UnknownSplitError(
                f"Dataset 'photo_crops' has no split {split!r}; "
                f"available splits: {sorted(PHOTO_CROPS_SPLITS)}."
            )
        default_size, offset = PHOTO_CROPS_SPLITS[split]
        self.resolution = 32 if resolution is None else int(resolution)
        self._len = int(num_examples or default_size)
        self.seed = (int(seed), offset)
        self.photos = tuple(photos)
        self.num_classes = len(self.photos)
        self.min_side = int(min_side)
        self.max_fraction = float(max_fraction)
        self._images: list[np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Example:
        if not 0 <= int(index) < self._len:
            raise IndexError(f"index {index} out of range for {self._len} photo crops")
        if self._images is None:
            self._images = _skimage_photos(self.photos)
        label = int(index) % len(self._images)
        photo = self._images[label]
        h, w = photo.shape[:2]
        rng = np.random.default_rng((*self.seed, int(index)))
        hi = max(self.min_side, int(self.max_fraction * min(h, w)))
        side = int(round(np.exp(rng.uniform(np.log(self.min_side), np.log(hi)))))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[y : y + side, x : x + side]
        if side != self.resolution:
            crop = prepare.resize_array(crop, self.resolution)
        return {"image": crop, "label": np.int32(label)}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        return [self[i] for i in indices]


@register_source("photo_crops")
def _photo_crops_source(
    split: str, data_dir: str | None = None, resolution: int | None = None, **kwargs: Any
) -> PhotoCrops:
    del data_dir
    return PhotoCrops(split, resolution, **kwargs)


def _prepare_command(path: str | os.PathLike) -> str:
    return f"python launch/prepare_data.py --input=<image folder> --output={path} --resolution=<N>"


def _check_split(split: str, available: Sequence[str], dataset: str) -> None:
    """Checks each base split of a tfds split spec such as 'train[:90%]+test'."""
    for part in split.split("+"):
        base = re.sub(r"\[.*\]", "", part).strip()
        if base not in available:
            raise UnknownSplitError(
                f"Dataset {dataset!r} has no split {base!r}; available splits: {sorted(available)}."
            )


def _label_feature(features: Any) -> tuple[str | None, int | None]:
    label = features["label"] if "label" in features else None
    if isinstance(label, tfds.features.ClassLabel):
        return "label", label.num_classes
    return None, None


def folder_source(
    path: str | os.PathLike, split: str = prepare.SPLIT, resolution: int | None = None
) -> ImageSource:
    """A dataset prepared by `dctjax.data.prepare.prepare_folder` (a tfds directory) at `path`."""
    path = Path(path).expanduser()
    if not (path / "dataset_info.json").is_file():
        if (path / prepare.STATE_DIR).is_dir():
            msg = (
                f"The preparation of {str(path)!r} is incomplete; rerun the same command to "
                f"resume it: {_prepare_command(path)}"
            )
        else:
            msg = f"No prepared dataset at {str(path)!r}; prepare it with: {_prepare_command(path)}"
        raise DatasetNotPreparedError(msg)
    builder = tfds.builder_from_directory(os.fspath(path))
    _check_split(split, list(builder.info.splits), str(path))
    label_key, num_classes = _label_feature(builder.info.features)
    return ImageSource(
        builder.as_data_source(split=split),
        label_key=label_key,
        num_classes=num_classes,
        resolution=resolution,
        name=str(path),
    )


def tfds_source(
    name: str,
    split: str,
    data_dir: str | None = None,
    resolution: int | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> ImageSource:
    """Any tfds dataset with an 'image' feature (and a ClassLabel 'label', if labelled), read from
    its array_record files as `tfds.data_source` does; `TFDS_PRESETS` supply the defaults for crop
    and resolution."""
    preset = TFDS_PRESETS.get(name.split(":")[0], TfdsPreset())
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.DatasetNotFoundError:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}: not a registered source {registered_sources()}, not a "
            "prepared folder (pass its path), and not a tfds builder name."
        ) from None
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"tfds dataset {name!r} has no 'image' feature ({list(features)}).")
    if builder.info.splits:  # empty when not prepared (and under tfds.testing.mock_data)
        _check_split(split, list(builder.info.splits), name)
    try:
        ds = builder.as_data_source(split=split)
    except Exception as e:
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(
            f"tfds dataset {name!r} is not prepared in array_record format under "
            f'{builder.data_dir_root}. On a machine with internet, run: python -c "import '
            f"tensorflow_datasets as tfds; tfds.data_source('{name}', download=True)\" "
            "(add data_dir=... to choose where), then pass that directory as data_dir."
        ) from e
    label_key, num_classes = _label_feature(features)
    return ImageSource(
        ds,
        label_key=label_key,
        num_classes=num_classes,
        crop=crop if crop is not None else preset.crop,
        resolution=resolution if resolution is not None else preset.resolution,
        name=name,
    )


def _is_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or (Path(name) / "dataset_info.json").is_file()
    )


def make_source(
    name: str,
    split: str,
    data_dir: str | None = None,
    resolution: int | None = None,
    **kwargs: Any,
) -> RandomAccessSource:
    """Returns the random-access source `name` (see the module docstring) for `split`.

    Items: {'image': (R, R, 3) uint8, 'label': () int32}. kwargs go to the registered factory
    (e.g. num_examples, num_classes, seed for 'synthetic'; crop for tfds datasets).
    """
    if name in _SOURCES:
        return _SOURCES.get(name)(split, data_dir=data_dir, resolution=resolution, **kwargs)
    if _is_path(name):
        return folder_source(name, split, resolution, **kwargs)
    return tfds_source(name, split, data_dir=data_dir, resolution=resolution, **kwargs)
