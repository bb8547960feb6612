"""JiT-700M/32 with Spectral Forcing on ImageNet 256x256 (class-conditional, 1000 classes); depth 36, hidden 1024, 16 heads, bottleneck 128, in-context start 12: [002]'s headline model.

The recipe of the Spectral Forcing launcher on JiT's defaults (`common.jit_config` lists it); SF
improves FID and IS over vanilla JiT (the `nosf` variant) in [002], without numbers; the JiT paper
reports FID 3.66 for JiT-B/16 at 256 px after 600 epochs.

    python launch/train.py --config=configs/jit_700m_imagenet256.py --workdir=runs/jit_700m_imagenet256
    python launch/train.py --config=configs/jit_700m_imagenet256.py:nosf --workdir=runs/jit_700m_imagenet256_nosf   # vanilla JiT
    python launch/train.py --config=configs/jit_700m_imagenet256.py:fixed --workdir=runs/jit_700m_imagenet256_fixed # ablation
    python launch/train.py --config=configs/jit_700m_imagenet256.py:runlocal --workdir=/tmp/jit_700m_imagenet256_smoke
    python launch/train.py --config=configs/jit_700m_imagenet256.py --workdir=/tmp/x --compile_only --config.dtype=bfloat16

ImageNet is read with tfds (`imagenet2012`, prepared once on a machine with the archives), centre
cropped to a square and resized (PIL bicubic, antialiased) to 256 px by the data pipeline; the
reference uses ADM's centre crop (box downsampling, then bicubic).
"""

from configs import common


def get_config(arg=None):
    c = common.jit_config(
        name="jit_700m_imagenet256_sf",
        dataset="imagenet2012",
        resolution=256,
        size="700M",
        patch_size=32,
        num_classes=1000,
        batch_size=1024,
        noise_scale=1.0,
        guidance=2.9,
    )
    return common.apply_jit_variant(c, arg)
