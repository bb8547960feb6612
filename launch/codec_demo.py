"""Round-trip generated images through the DCTdiff and DCTransformer codecs and write a PNG grid.

python launch/codec_demo.py --out=codec_demo.png [--resolution=128]
"""

from absl import app, flags

from dctjax.demo import codec_demo

flags.DEFINE_string("out", "codec_demo.png", "PNG grid: originals, tokens, sparse round trips.")
flags.DEFINE_integer("resolution", 128, "Image size (divisible by 2*block_size and 16).")
flags.DEFINE_integer("block_size", 4, "DCTdiff block size B.")
flags.DEFINE_integer("low_freqs", 9, "DCTdiff zigzag frequencies kept per block.")
flags.DEFINE_integer("quality", 75, "DCTransformer JPEG quality (B=8).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    figures = codec_demo(
        FLAGS.out,
        resolution=FLAGS.resolution,
        block_size=FLAGS.block_size,
        low_freqs=FLAGS.low_freqs,
        quality=FLAGS.quality,
    )
    for k, v in figures.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    app.run(main)
