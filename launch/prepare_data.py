"""Converts a folder of JPEG/PNG images into an array_record (tfds format) dataset.

  python launch/prepare_data.py --input=DIR --output=DIR --resolution=64
      [--labels=folders] [--skip_corrupt] [--workers=8] [--small_images=upscale|skip]

Rerunning the same command resumes an interrupted preparation. Read the result with
`dctjax.data.sources.make_source(OUTPUT_DIR, 'train')`. See `dctjax/data/prepare.py`.
"""

from absl import app, flags

from dctjax.data import prepare

_INPUT = flags.DEFINE_string("input", None, "Folder of images, searched recursively.")
_OUTPUT = flags.DEFINE_string("output", None, "Output dataset directory (new, empty, or resumed).")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Output side length in pixels.")
_LABELS = flags.DEFINE_enum(
    "labels", "none", sorted(prepare.LABELERS), "'folders': labels from first-level sub-folders."
)
_SKIP_CORRUPT = flags.DEFINE_bool("skip_corrupt", False, "Skip undecodable files (counted).")
_SMALL_IMAGES = flags.DEFINE_enum(
    "small_images", "upscale", list(prepare.SMALL_IMAGE_POLICIES), "Images below the resolution."
)
_WORKERS = flags.DEFINE_integer("workers", 1, "Decoding/resizing processes.")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 1024, "Input files per shard (unit of resume).")
flags.mark_flags_as_required(["input", "output", "resolution"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    prepare.prepare_folder(
        _INPUT.value,
        _OUTPUT.value,
        _RESOLUTION.value,
        labels=_LABELS.value,
        skip_corrupt=_SKIP_CORRUPT.value,
        small_images=_SMALL_IMAGES.value,
        workers=_WORKERS.value,
        shard_size=_SHARD_SIZE.value,
    )


if __name__ == "__main__":
    app.run(main)
