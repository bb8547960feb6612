"""Dataset DCT statistics for DCTdiff and DCTransformer configs.

    python launch/dct_stats.py --data=cifar10 --block_size=2 --low_freqs=4 --output=stats.json
    python launch/dct_stats.py --data=/data/ffhq256_prepared --block_size=4 --low_freqs=8 \
        --quality=75 --output=ffhq256_stats.json

--data is a tfds name, a folder prepared by launch/prepare_data.py, or 'synthetic'. The JSON holds
eta, the Y/Cb/Cr entropy vectors, the EBFR weights and, with --quality, the sparse sequence length
distribution (its P95 is the default L_max). Configs read it with `stats=PATH.json`.
"""

from absl import app, flags

from dctjax.data import sources
from dctjax.data.dataset_stats import dataset_statistics, write_json

flags.DEFINE_string("data", None, "tfds name, prepared folder, or 'synthetic'.", required=True)
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_string("data_dir", None, "tfds data_dir.")
flags.DEFINE_integer("resolution", None, "Resize (centre crop) to this size; default: native.")
flags.DEFINE_integer("block_size", 4, "DCTdiff block size B.")
flags.DEFINE_integer("low_freqs", 16, "DCTdiff zigzag frequencies kept per block.")
flags.DEFINE_integer("num_images", 50_000, "Random images to pool (the reference uses 50k).")
flags.DEFINE_integer("batch_size", 256, "Images per reduction step.")
flags.DEFINE_integer("quality", None, "JPEG quality for the sparse length distribution.")
flags.DEFINE_integer("sparse_block_size", 8, "DCTransformer block size.")
flags.DEFINE_integer("clip", 1200, "DCTransformer value clip.")
flags.DEFINE_integer("seed", 0, "Seed of the random image subset.")
flags.DEFINE_string("output", "dct_stats.json", "Output JSON path.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    source = sources.make_source(
        FLAGS.data, FLAGS.split, data_dir=FLAGS.data_dir, resolution=FLAGS.resolution
    )
    stats = dataset_statistics(
        source,
        FLAGS.block_size,
        FLAGS.low_freqs,
        num_images=FLAGS.num_images,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        quality=FLAGS.quality,
        sparse_block_size=FLAGS.sparse_block_size,
        clip=FLAGS.clip,
        name=FLAGS.data,
    )
    write_json(stats, FLAGS.output)
    print(f"eta={stats['eta']}  images={stats['num_images']}  -> {FLAGS.output}")
    if "sparse" in stats:
        print(
            f"sparse lengths: {stats['sparse']['percentiles']}  L_max={stats['sparse']['max_length']}"
        )


if __name__ == "__main__":
    app.run(main)
