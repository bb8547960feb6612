"""JiT-B/32 with Spectral Forcing on ImageNet 512x512 (class-conditional, 1000 classes); 256 tokens; noise_scale 2.0 at 512 px.

The Spectral Forcing recipe (spec spectral.md §2.5, the official launcher on JiT's defaults): 600
epochs at global batch 1024 (128 per GPU on 8 GPUs), blr 5e-5 (lr = blr * batch / 256), 5 warm-up
epochs then constant, AdamW (0.9, 0.95) without weight decay, EMAs 0.9999 / 0.9996, logit-normal t
(P_mean -0.8, P_std 0.8), x-prediction with the v-loss, noise_scale 2.0, label dropout 0.1;
sampling: Heun, 50 steps (99 NFE), CFG 2.9 on velocities inside t in (0.1, 1.0). SF: full-image
DCT low-pass before the patch embed, c(t) = 0.05 + 0.95 t, kappa 30. [002] reports FID and IS gains
over vanilla JiT (the `nosf` variant) without numbers; JiT-B/16 at 256 px reports FID 3.66 (JiT
paper, 600 epochs).

    python launch/train.py --config=configs/jit_b32_imagenet512.py --workdir=runs/jit_b32_imagenet512
    python launch/train.py --config=configs/jit_b32_imagenet512.py:nosf --workdir=runs/jit_b32_imagenet512_nosf   # vanilla JiT
    python launch/train.py --config=configs/jit_b32_imagenet512.py:fixed --workdir=runs/jit_b32_imagenet512_fixed # ablation
    python launch/train.py --config=configs/jit_b32_imagenet512.py:runlocal --workdir=/tmp/jit_b32_imagenet512_smoke
    python launch/train.py --config=configs/jit_b32_imagenet512.py --workdir=/tmp/x --compile_only --config.dtype=bfloat16

ImageNet is read with tfds (`imagenet2012`, prepared once on a machine with the archives), centre
cropped (ADM) and resized to 512 px by the data pipeline.
"""

from configs import common


def get_config(arg=None):
    c = common.jit_config(
        name="jit_b32_imagenet512_sf",
        dataset="imagenet2012",
        resolution=512,
        size="B",
        patch_size=32,
        num_classes=1000,
        batch_size=1024,
        noise_scale=2.0,
        guidance=2.9,
    )
    return common.apply_jit_variant(c, arg)
