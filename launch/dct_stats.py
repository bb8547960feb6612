"""Dataset DCT statistics for DCTdiff and DCTransformer configs.

    python launch/dct_stats.py --data=cifar10 --block_size=2 --low_freqs=4 --output=stats.json
    python launch/dct_stats.py --data=/data/ffhq256_prepared --block_size=4 --low_freqs=8 \
        --quality=75 --output=ffhq256_stats.json

--data is a tfds name, a folder prepared by launch/prepare_data.py, or 'synthetic'. The JSON holds
eta, the Y/Cb/Cr entropy vectors, the EBFR weights and, with --quality, the sparse sequence length
distribution (its P95 is the default L_max). Configs read it with `stats=PATH.json`.

With --choices it also prints, and writes under "choices", what to pick for a DCTdiff config
(`dctjax.data.dct_choices`): (a) the m* table, the codec round trip's reconstruction quality and
compression 2B^2/L for each low_freqs, with rFID and m* (largest m = B^2 - L with rFID < 0.5) when
--inception_weights names the FID Inception, else an offline proxy labelled as such and no m*;
(b) the SNR scale c for --low_freqs by variance matching, c = v_pixels / v_tokens, with its inputs:

    python launch/dct_stats.py --data=idx --resolution=32 --block_size=4 --low_freqs=8 \
        --choices --choices_num_images=5000 --output=fmnist_stats.json
    python launch/dct_stats.py --data=ffhq256_prepared --block_size=4 --low_freqs=8 \
        --choices --inception_weights=pt_inception-2015-12-05.pth --output=ffhq256_stats.json
"""

from absl import app, flags

from dctjax.data import dct_choices, sources
from dctjax.data.dataset_stats import (
    dataset_statistics,
    image_batches,
    random_subset,
    write_json,
)

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
flags.DEFINE_bool("choices", False, "Also compute the m* table and the recommended SNR scale c.")
flags.DEFINE_integer("choices_num_images", 10_000, "Images for --choices (same random draw).")
flags.DEFINE_list("choices_low_freqs", None, "low_freqs values of the m* table; default 1..B^2.")
flags.DEFINE_string(
    "inception_weights", None, "FID Inception .pth/.npz: rFID and m*; without, an offline proxy."
)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.inception_weights and not FLAGS.choices:
        raise app.UsageError("--inception_weights is used by --choices; add --choices.")
    feature_fn = None
    if FLAGS.inception_weights:  # loaded first: a bad path fails before the statistics pass
        from dctjax.eval.inception import load_inception

        feature_fn = load_inception(FLAGS.inception_weights, batch_size=FLAGS.batch_size)
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
    if FLAGS.choices:
        indices = random_subset(source, FLAGS.choices_num_images, FLAGS.seed)
        stats["choices"] = dct_choices.dct_choices(
            image_batches(source, indices, FLAGS.batch_size),
            FLAGS.block_size,
            stats["eta"],
            FLAGS.low_freqs,
            candidates=[int(v) for v in FLAGS.choices_low_freqs or []] or None,
            feature_fn=feature_fn,
        )
        stats["choices"]["seed"] = FLAGS.seed
        print(dct_choices.format_choices(stats["choices"], FLAGS.data))
    write_json(stats, FLAGS.output)
    print(f"eta={stats['eta']}  images={stats['num_images']}  -> {FLAGS.output}")
    if "sparse" in stats:
        print(
            f"sparse lengths: {stats['sparse']['percentiles']}  L_max={stats['sparse']['max_length']}"
        )


if __name__ == "__main__":
    app.run(main)
