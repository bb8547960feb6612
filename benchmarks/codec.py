"""Codec throughput: the batched jit codec against the reference's per-block loop and a vectorised
per-image NumPy/scipy version of the same transform.

    python benchmarks/codec.py [--json=codec.json] [--quick]

Prints a table (images/s and ratios) and writes JSON with, per setting, the images/s of the jit
codec and of each baseline and `speedup_vs_loop_x_cores` = jit encode / (loop encode * cores): the
reference spreads its loop over data-loader workers, one core each. The jit codec runs both on one
XLA device (XLA's own threads) and with the batch sharded over one host device per core
(`sharded_*`); the speedup uses the faster of the two. Also reports how close the jit
encoder is to this machine's limits: its DCT work timed as a plain matmul of the same shape, and
its bytes (uint8 in, float32 out) against a copy's bandwidth.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform

# One XLA host device per core, so the batch can also be sharded over the cores (data parallel, as
# the reference spreads its loop over loader workers). Must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={os.cpu_count() or 1}")

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

from benchmarks._timing import median_seconds, print_table, write_json
from dctjax.codec import tokens as tk
from dctjax.codec.dct import zigzag_order

try:
    import cv2

    cv2.setNumThreads(1)
except ImportError:  # the loop baseline then uses scipy per block, and says so
    cv2 = None

SETTINGS = [
    dict(name="cifar10_32", resolution=32, block_size=2, low_freqs=4, eta=242.382, batch=256),
    dict(name="ffhq_128", resolution=128, block_size=4, low_freqs=9, eta=480.25, batch=64),
    dict(name="ffhq_256", resolution=256, block_size=4, low_freqs=8, eta=485.0, batch=16),
    dict(name="afhq_512", resolution=512, block_size=8, low_freqs=18, eta=928.0, batch=8),
]


def make_images(n: int, res: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    phase = rng.uniform(0, 6, (n, 1, 1, 3))
    base = 128 + 80 * np.sin(5 * yy[..., None] + 3 * xx[..., None] + phase)
    return np.clip(base + rng.normal(0, 12, (n, res, res, 3)), 0, 255).astype(np.uint8)


# ----- baseline (a): the reference data loader, per image, one 2-D DCT call per block -----------


def _block_dct_2d(block: np.ndarray) -> np.ndarray:
    if cv2 is not None:
        return cv2.dct(block)
    return scipy.fft.dctn(block, norm="ortho")


def _block_idct_2d(block: np.ndarray) -> np.ndarray:
    if cv2 is not None:
        return cv2.idct(block)
    return scipy.fft.idctn(block, norm="ortho")


def _resize(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    if cv2 is not None:
        return cv2.resize(plane, (w, h), interpolation=cv2.INTER_LINEAR)
    from PIL import Image

    return np.asarray(Image.fromarray(plane.astype(np.float32)).resize((w, h), Image.BILINEAR))


def loop_encode(img: np.ndarray, b: int, low_freqs: int, eta: float) -> np.ndarray:
    r, g, bl = img[..., 0], img[..., 1], img[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    h, w = y.shape
    cb = _resize(cb, w // 2, h // 2)
    cr = _resize(cr, w // 2, h // 2)
    zz = zigzag_order(b)

    def plane_coeffs(p):
        out = []
        for i in range(0, p.shape[0], b):
            for j in range(0, p.shape[1], b):
                out.append(_block_dct_2d(np.float32(p[i : i + b, j : j + b]) - 128))
        return np.array(out).reshape(len(out), b * b)[:, zz][:, :low_freqs]

    yc, cbc, crc = plane_coeffs(y), plane_coeffs(cb), plane_coeffs(cr)
    gw = w // (2 * b)
    bw = w // b
    tokens = []
    for t in range(cbc.shape[0]):
        i, j = divmod(t, gw)
        ys = [yc[(2 * i + rr) * bw + 2 * j + qq] for rr in (0, 1) for qq in (0, 1)]
        tokens.append(np.concatenate([*ys, cbc[t], crc[t]]))
    return np.stack(tokens) / eta


def loop_decode(tok: np.ndarray, b: int, low_freqs: int, eta: float, res: int) -> np.ndarray:
    unzz = np.argsort(zigzag_order(b))
    x = np.clip(tok, -2, 2).reshape(-1, 6, low_freqs) * eta
    x = np.concatenate([x, np.zeros((x.shape[0], 6, b * b - low_freqs))], -1)[..., unzz]
    x = x.reshape(-1, 6, b, b).astype(np.float32)
    gw = res // (2 * b)
    y = np.zeros((res, res), np.float32)
    cb = np.zeros((res // 2, res // 2), np.float32)
    cr = np.zeros_like(cb)
    for t in range(x.shape[0]):
        i, j = divmod(t, gw)
        for k, (rr, qq) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            r0, c0 = (2 * i + rr) * b, (2 * j + qq) * b
            y[r0 : r0 + b, c0 : c0 + b] = _block_idct_2d(x[t, k]) + 128
        cb[i * b : (i + 1) * b, j * b : (j + 1) * b] = _block_idct_2d(x[t, 4]) + 128
        cr[i * b : (i + 1) * b, j * b : (j + 1) * b] = _block_idct_2d(x[t, 5]) + 128
    cb, cr = _resize(cb, res, res) - 128, _resize(cr, res, res) - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# ----- baseline (b): vectorised per image, NumPy + scipy.fft ---------------------------------------


def vectorised_encode(img: np.ndarray, b: int, low_freqs: int, eta: float) -> np.ndarray:
    m = np.array(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
        np.float32,
    )
    ycc = (img.astype(np.float32) - 128) @ m.T
    h, w, _ = ycc.shape
    gh, gw = h // (2 * b), w // (2 * b)
    y = (
        ycc[..., 0]
        .reshape(gh, 2, b, gw, 2, b)
        .transpose(0, 3, 1, 4, 2, 5)
        .reshape(gh * gw, 4, b, b)
    )
    c = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    c = c.reshape(gh, b, gw, b, 2).transpose(0, 2, 4, 1, 3).reshape(gh * gw, 2, b, b)
    blocks = np.concatenate([y, c], axis=1)
    coeffs = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho", workers=1)
    coeffs = coeffs.reshape(gh * gw, 6, b * b)[..., zigzag_order(b)[:low_freqs]]
    return coeffs.reshape(gh * gw, 6 * low_freqs) / eta


# ----- limits of this machine ----------------------------------------------------------------------


def machine_limits(setting: dict, images, repeats: int) -> dict:
    b, lf, n, res = (
        setting["block_size"],
        setting["low_freqs"],
        setting["batch"],
        setting["resolution"],
    )
    num_blocks = n * (res // b) ** 2 * 3 // 2  # Y blocks + both half-resolution chroma planes
    a = jnp.ones((num_blocks, b * b), jnp.float32)
    w = jnp.ones((b * b, lf), jnp.float32)
    mm = jax.jit(lambda a, w: a @ w)
    t_matmul = median_seconds(lambda: mm(a, w).block_until_ready(), repeats)
    out_bytes = n * (res // (2 * b)) ** 2 * 6 * lf * 4
    big = jnp.zeros((64 * 2**20,), jnp.uint8)
    copy = jax.jit(lambda x: x ^ jnp.uint8(1))
    t_copy = median_seconds(lambda: copy(big).block_until_ready(), repeats)
    copy_gbps = 2 * big.size / t_copy / 1e9
    io_bytes = images.size + out_bytes
    return dict(
        matmul_s=t_matmul,
        copy_gbps=copy_gbps,
        bytes_bound_s=io_bytes / (copy_gbps * 1e9),
        io_bytes=io_bytes,
    )


def run_setting(s: dict, repeats: int, loop_images: int) -> dict:
    b, lf, eta, res, n = s["block_size"], s["low_freqs"], s["eta"], s["resolution"], s["batch"]
    host = make_images(n, res)
    images = jax.device_put(host)
    enc = jax.jit(functools.partial(tk.images_to_tokens, block_size=b, low_freqs=lf, eta=eta))
    dec = jax.jit(functools.partial(tk.tokens_to_images, block_size=b, low_freqs=lf, eta=eta))
    rt = jax.jit(lambda x: dec(enc(x)))
    tokens = enc(images).block_until_ready()
    t_enc1 = median_seconds(lambda: enc(images).block_until_ready(), repeats)
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(
        host, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
    )
    enc(sharded).block_until_ready()
    t_enc_sh = median_seconds(lambda: enc(sharded).block_until_ready(), repeats)
    t_enc = min(t_enc1, t_enc_sh)
    t_dec = median_seconds(lambda: dec(tokens).block_until_ready(), repeats)
    t_rt = median_seconds(lambda: rt(images).block_until_ready(), repeats)
    cost = enc.lower(images).compile().cost_analysis()
    flops = float(cost.get("flops", 0.0)) if cost else 0.0

    k = min(loop_images, n)
    np.testing.assert_allclose(loop_encode(host[0], b, lf, eta), np.asarray(tokens[0]), atol=1e-3)
    t_loop = median_seconds(lambda: [loop_encode(im, b, lf, eta) for im in host[:k]], 3) / k
    tok_host = np.asarray(tokens)
    t_loop_dec = (
        median_seconds(lambda: [loop_decode(t, b, lf, eta, res) for t in tok_host[:k]], 3) / k
    )
    t_vec = median_seconds(lambda: [vectorised_encode(im, b, lf, eta) for im in host[:k]], 3) / k
    cores = os.cpu_count() or 1
    lim = machine_limits(s, host, repeats)
    row = dict(
        setting=s["name"],
        batch=n,
        jit_encode_ips=n / t_enc,
        jit_encode_1device_ips=n / t_enc1,
        sharded_encode_ips=n / t_enc_sh,
        host_devices=len(devices),
        jit_decode_ips=n / t_dec,
        jit_roundtrip_ips=n / t_rt,
        loop_encode_ips=1 / t_loop,
        loop_decode_ips=1 / t_loop_dec,
        vectorised_encode_ips=1 / t_vec,
        speedup_vs_loop_x_cores=(n / t_enc) / (cores / t_loop),
        decode_speedup_vs_loop_x_cores=(n / t_dec) / (cores / t_loop_dec),
        speedup_vs_vectorised=(n / t_enc) * t_vec,
        encode_gflops=flops / t_enc / 1e9,
        encode_gbps=lim["io_bytes"] / t_enc / 1e9,
        matmul_bound_fraction=lim["matmul_s"] / t_enc,
        copy_bound_fraction=lim["bytes_bound_s"] / t_enc,
        copy_gbps=lim["copy_gbps"],
    )
    return row


def run_sparse(repeats: int) -> dict:
    """Sparse encoding (image -> padded sequence) at 256 px, B=8, q=75: jit on a batch against the
    host NumPy version per example (what a grain worker would run)."""
    from dctjax.codec import sparse

    n, res, b, q, clip = 8, 256, 8, 75, 1200
    host = make_images(n, res, seed=1)
    images = jax.device_put(host)
    max_len = sparse.max_sequence_length((res // b, res // b), b)
    enc = jax.jit(
        functools.partial(
            sparse.images_to_sequence, block_size=b, quality=q, clip=clip, max_len=max_len
        )
    )
    seq = jax.block_until_ready(enc(images))
    t_jit = median_seconds(lambda: jax.block_until_ready(enc(images)), repeats)

    def host_encode():
        for im in host:
            dense = sparse.np_images_to_dct_image(im, block_size=b, quality=q, clip=clip)
            sparse.np_dct_image_to_sequence(dense, block_size=b, max_len=max_len)

    t_host = median_seconds(host_encode, max(3, repeats // 4))
    return dict(
        setting="sparse_256_B8_q75",
        batch=n,
        mean_length=float(np.mean(np.asarray(seq.length))),
        jit_ips=n / t_jit,
        host_ips=n / t_host,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    args = p.parse_args()
    repeats = 5 if args.quick else 20
    rows = [run_setting(s, repeats, loop_images=2 if args.quick else 4) for s in SETTINGS]
    print_table(
        rows,
        [
            "setting",
            "batch",
            "jit_encode_1device_ips",
            "sharded_encode_ips",
            "jit_decode_ips",
            "jit_roundtrip_ips",
            "loop_encode_ips",
            "loop_decode_ips",
            "vectorised_encode_ips",
            "speedup_vs_loop_x_cores",
            "decode_speedup_vs_loop_x_cores",
            "speedup_vs_vectorised",
        ],
    )
    print()
    print_table(
        rows,
        ["setting", "encode_gflops", "encode_gbps", "copy_gbps", "matmul_bound_fraction",
         "copy_bound_fraction"],
    )  # fmt: skip
    sparse_row = run_sparse(repeats)
    print()
    print_table([sparse_row], ["setting", "batch", "mean_length", "jit_ips", "host_ips"])
    write_json(
        args.json,
        dict(
            machine=dict(
                cores=os.cpu_count(),
                processor=platform.processor() or platform.machine(),
                jax=jax.__version__,
                backend=jax.default_backend(),
                loop_dct=("cv2.dct" if cv2 is not None else "scipy.fft.dctn"),
            ),
            settings=rows,
            sparse=sparse_row,
        ),
    )


if __name__ == "__main__":
    main()
