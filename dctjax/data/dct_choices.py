"""Choosing low_freqs and the SNR scale c of a DCTdiff config from the data (spec dctdiff §4.5, §6).

What `launch/dct_stats.py --choices` runs, on a stream of uint8 image batches and the dataset's eta:

1. **The m* table** (spec §4.5, the poster's compression table). For every candidate L = low_freqs
   the images go through the `dct_tokens` round trip (`DCTTokens.encode` -> `decode`, the same B and
   eta) and the reconstructions are compared with the originals:
   - `rfid`: FID between reconstructions and originals with a feature function (the FID Inception,
     `dctjax.eval.inception.load_inception`), when one is given. m* is the largest m = B^2 - L with
     rFID < 0.5, the paper's "near lossless" threshold.
   - `psnr`: 10 log10(255^2 / MSE), the MSE pooled over all pixels and images (None when lossless).
   - `proxy_fd`: **a proxy, not rFID**: the Frechet distance between the per-image log10 radially
     averaged power spectra (`PROXY_DEFINITION`) of originals and reconstructions. Dropping
     frequencies removes high-frequency power and adds block-edge power, which is what it sees;
     the two can partly cancel, so it need not grow monotonically with m (read it with PSNR).
     Its scale is not calibrated against rFID, so no threshold is applied to it: without a feature
     function there is no m*, only the table.
   - `compression`: 3HW / (6L N) = 2B^2 / L, and `snr_scale`, the c of item 2 for that L.

2. **The SNR scale c, by variance matching** (`RULE`). In the SNR-scaled VP-SDE, x_t = alpha x0 +
   sigma eps with alpha^2 / sigma^2 = c SNR(t), so a data dimension of centred variance v has signal-
   to-noise ratio c v SNR(t). The linear schedule was tuned for pixels in [-1, 1] at c = 1 (the pixel
   U-ViT baselines). Giving the tokens the same ratio on average needs

       c = v_pixels / v_tokens,

   v_pixels the mean over dimensions of the per-dimension variance (over images) of u/127.5 - 1, and
   v_tokens the same for the tokens exactly as `DCTTokens.encode` yields them (YCbCr 4:2:0, block
   DCT, divided by eta, the first L zigzag frequencies). Since the mean of per-dimension variances is
   the total centred energy per dimension, this matches E||x0 - E x0||^2 / E||sigma eps||^2 per
   dimension at every t: the whole log-SNR curve of the tokens, averaged this way, lands on the
   pixel model's.

   Why the arithmetic mean of the variances and not a per-frequency or low-frequency-weighted
   variant: c is one scalar that shifts every dimension's log-SNR by the same log c, so it can match
   one summary of the variance spectrum and no more. The arithmetic mean is the one the noise
   actually competes with in the squared error, it needs no weights to be chosen, and it stays
   finite when some dimensions carry no variance (the chroma of grayscale data, dropped-to-nothing
   high frequencies), where a geometric mean (mean log-SNR) would send c to infinity. It is computed
   on the model's inputs, so eta, L, the 4:2:0 halving of the chroma dimensions and the colour
   transform are all accounted for.

   The paper set c by hand per dataset (CIFAR-10 B=2 c=2, CelebA-64 c=4, FFHQ-128 c=3, FFHQ-256
   c=1, FFHQ/AFHQ-512 c=12, `PAPER_SNR_SCALES`). They are printed as calibration points only: those
   datasets are not read here, so what the rule gives on them is not claimed.

Everything is deterministic for a given set of images: float64 moments, a fixed proxy, c rounded
to 2 decimals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dctjax.codec import _checks, spectral

FeatureFn = Callable[[np.ndarray], Mapping[str, Any]]

RULE = "variance matching"
RFID_THRESHOLD = 0.5  # poster: "rFID = 0.5 as near lossless compression"
FEATURE_NAME = "pool3"
PROXY_LABEL = "proxy, not rFID"
PROXY_DEFINITION = (
    "Frechet distance between per-image log10 radially averaged power spectra (RAPSD: "
    "orthonormal 2-D DFT of the image in [0, 1], power averaged over channels, min(H, W)//2 "
    "equal-width radial bins, DC excluded, floor 1e-10) of originals and reconstructions"
)
PROXY_FLOOR = 1e-10
# (dataset, B, L, c) of the reference configs (spec §5, commit 3561c1e and later 512^2 configs).
PAPER_SNR_SCALES: tuple[tuple[str, int, int, float], ...] = (
    ("CIFAR-10 32", 2, 4, 2.0),
    ("CelebA 64", 2, 4, 4.0),
    ("FFHQ 128", 4, 9, 3.0),
    ("FFHQ 256", 4, 8, 1.0),
    ("FFHQ 512", 8, 18, 12.0),
    ("AFHQ 512", 8, 18, 12.0),
)


class Moments:
    """Streaming per-dimension mean and centred sum of squares of (n, ...) rows, in float64
    (Chan et al.'s pairwise update); `variance` is the population variance (ddof = 0), as np.var."""

    def __init__(self):
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, x: Any) -> Moments:
        x = np.asarray(x, np.float64)
        n = len(x)
        if n == 0:
            return self
        x = x.reshape(n, -1)
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.mean, self.m2 = mean, m2
        else:
            if mean.shape != self.mean.shape:
                raise ValueError(f"rows of {mean.size} values after rows of {self.mean.size}.")
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count += n
        return self

    @property
    def variance(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no rows were added.")
        return self.m2 / self.count


def _dct_tokens(resolution: int, block_size: int, low_freqs: int, eta: float):
    from dctjax.representations import make_representation  # imports dctjax.data: keep it lazy

    return make_representation(
        "dct_tokens", resolution=resolution, block_size=block_size, low_freqs=low_freqs, eta=eta
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _encode(images: jax.Array, block_size: int, low_freqs: int, eta: float) -> jax.Array:
    return _dct_tokens(images.shape[1], block_size, low_freqs, eta).encode(images)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _round_trip(images: jax.Array, block_size: int, low_freqs: int, eta: float) -> jax.Array:
    rep = _dct_tokens(images.shape[1], block_size, low_freqs, eta)
    return rep.decode(rep.encode(images))


@jax.jit
def _log_rapsd(images: jax.Array) -> jax.Array:
    x = images.astype(jnp.float32) / 255.0
    power = jax.vmap(lambda im: spectral.rapsd(im[None]).power)(x)
    return jnp.log10(power + PROXY_FLOOR)


def proxy_features(images: Any) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, min(H, W)//2) float64 features of the proxy (`PROXY_DEFINITION`)."""
    _checks.check_images(images)
    return np.asarray(_log_rapsd(jnp.asarray(images)), np.float64)


def _frechet(a: Any, b: Any) -> float:
    """Frechet distance of two objects with `.mean` and `.cov` (clamped at 0: rounding)."""
    from dctjax.eval.metrics import frechet_distance

    return max(0.0, frechet_distance(a.mean, a.cov, b.mean, b.cov))


def _feature_stats():
    from dctjax.eval.metrics import FeatureStats

    return FeatureStats()


def token_variance(variance: np.ndarray, block_size: int, low_freqs: int) -> dict[str, float]:
    """Mean per-dimension variance of the tokens with `low_freqs` kept, from the per-dimension
    variances of the full tokens (..., 6 * B^2): the first low_freqs zigzag ranks of each block.
    Returns the mean ('all') and the shares of the total held by Y (4 blocks), Cb, Cr and the DC terms.
    """
    b2 = block_size * block_size
    v = np.asarray(variance, np.float64).reshape(-1, 6, b2)[..., :low_freqs]
    total = v.sum()
    share = (lambda s: float(s / total)) if total > 0 else (lambda s: 0.0)
    return dict(
        all=float(v.mean()),
        share_y=share(v[:, :4].sum()),
        share_cb=share(v[:, 4].sum()),
        share_cr=share(v[:, 5].sum()),
        share_dc=share(v[..., 0].sum()),
    )


def snr_scale(v_pixels: float, v_tokens: float) -> float:
    """The variance-matching SNR scale c = v_pixels / v_tokens, rounded to 2 decimals."""
    if not v_tokens > 0:
        raise ValueError(
            f"the tokens have no variance (v_tokens={v_tokens}); the images are all alike, so "
            "variance matching has nothing to match."
        )
    return round(float(v_pixels) / float(v_tokens), 2)


def dct_choices(
    batches: Iterable[Any],
    block_size: int,
    eta: float,
    low_freqs: int,
    *,
    candidates: Sequence[int] | None = None,
    feature_fn: FeatureFn | None = None,
    threshold: float = RFID_THRESHOLD,
) -> dict[str, Any]:
    """The m* table and the recommended SNR scale from uint8 (n, R, R, 3) image batches.

    Args:
      batches: iterable of uint8 batches, square images with R divisible by 2B.
      block_size, eta: the DCTdiff B and the dataset's eta (from `dataset_statistics`).
      low_freqs: the L the c recommendation is for (the table has c for every candidate too).
      candidates: the L values of the table (default 1..B^2).
      feature_fn: uint8 batch -> {'pool3': (n, d)}, e.g. `load_inception(path)`; with it the table
        has rFID and m*; without, only the proxy and no m*. Memory: one (d, d) float64 covariance
        per candidate (32 MB each for the Inception's d = 2048); images are streamed.
      threshold: the rFID threshold of m* (the paper's 0.5).

    Returns a JSON-ready dict (see `format_choices` for how it reads).
    """
    b = _checks.check_block_size(block_size)
    b2 = b * b
    eta = _checks.check_positive(eta, "eta")
    _checks.check_int_range(low_freqs, "low_freqs", 1, b2)
    cands = sorted(set(range(1, b2 + 1) if candidates is None else candidates), reverse=True)
    if not cands:
        raise ValueError("candidates is empty; give at least one low_freqs value.")
    for lf in cands:
        _checks.check_int_range(lf, "candidate low_freqs", 1, b2)

    pixels, tokens = Moments(), Moments()
    sse = dict.fromkeys(cands, 0)
    proxy_orig, proxy_rec = _feature_stats(), {lf: _feature_stats() for lf in cands}
    feats_orig = _feature_stats() if feature_fn is not None else None
    feats_rec = {lf: _feature_stats() for lf in cands} if feature_fn is not None else None
    num_values, resolution = 0, None
    for batch in batches:
        images = np.asarray(batch)
        _checks.check_images(images)
        if len(images) == 0:
            continue
        size = images.shape[1]
        if images.shape[2] != size or resolution not in (None, size):
            raise ValueError(
                f"images must be square and all the same size; got {images.shape[1:3]} "
                f"(earlier batches: {resolution})."
            )
        resolution = size
        pixels.update(images.astype(np.float64) / 127.5 - 1.0)
        tokens.update(np.asarray(_encode(jnp.asarray(images), b, b2, eta)))
        num_values += images.size
        proxy_orig.update(proxy_features(images))
        if feature_fn is not None:
            feats_orig.update(np.asarray(feature_fn(images)[FEATURE_NAME]))
        for lf in cands:
            rec = np.asarray(_round_trip(jnp.asarray(images), b, lf, eta))
            sse[lf] += int(((rec.astype(np.int64) - images.astype(np.int64)) ** 2).sum())
            proxy_rec[lf].update(proxy_features(rec))
            if feature_fn is not None:
                feats_rec[lf].update(np.asarray(feature_fn(rec)[FEATURE_NAME]))
    if pixels.count < 2:
        raise ValueError(f"{pixels.count} image(s): variances and rFID need at least 2.")

    v_pixels = float(pixels.variance.mean())
    rows = []
    for lf in cands:
        mse = sse[lf] / num_values
        lossless = sse[lf] == 0
        v_tok = token_variance(tokens.variance, b, lf)
        row: dict[str, Any] = dict(
            m=b2 - lf,
            low_freqs=lf,
            compression=2 * b2 / lf,
            mse=mse,
            psnr=None if lossless else 10.0 * math.log10(255.0**2 / mse),
            proxy_fd=0.0 if lossless else _frechet(proxy_orig, proxy_rec[lf]),
            rfid=None,
            v_tokens=v_tok["all"],
            snr_scale=snr_scale(v_pixels, v_tok["all"]) if v_tok["all"] > 0 else None,
        )
        if feature_fn is not None:
            row["rfid"] = 0.0 if lossless else _frechet(feats_orig, feats_rec[lf])
        rows.append(row)

    if feature_fn is not None:
        passing = [r["m"] for r in rows if r["rfid"] < threshold]
        m_star = max(passing) if passing else None
        m_note = (
            f"m* = {m_star} (low_freqs = {b2 - m_star}): the largest m with rFID < {threshold}."
            if m_star is not None
            else f"no candidate has rFID < {threshold}; not even m = {rows[0]['m']}."
        )
    else:
        m_star = None
        m_note = (
            "no m*: rFID needs the FID Inception (--inception_weights=PATH). The proxy has no "
            "calibrated threshold, so its table only ranks the candidates."
        )

    v_tok = token_variance(tokens.variance, b, low_freqs)
    recommended = snr_scale(v_pixels, v_tok["all"])
    return dict(
        block_size=b,
        eta=eta,
        num_images=pixels.count,
        resolution=resolution,
        metric="rfid" if feature_fn is not None else "proxy",
        proxy=dict(label=PROXY_LABEL, definition=PROXY_DEFINITION),
        rfid_threshold=threshold,
        table=rows,
        m_star=m_star,
        m_star_low_freqs=None if m_star is None else b2 - m_star,
        m_star_note=m_note,
        snr=dict(
            rule=RULE,
            low_freqs=low_freqs,
            v_pixels=v_pixels,
            v_tokens=v_tok["all"],
            token_variance_share={k[6:]: v for k, v in v_tok.items() if k.startswith("share_")},
            ratio=v_pixels / v_tok["all"],
            snr_scale=recommended,
            definition=(
                "c = v_pixels / v_tokens: mean per-dimension variance over images of the pixel "
                "model's input (u/127.5 - 1) over that of DCTTokens.encode (B, eta, low_freqs); "
                "then c * v_tokens * SNR(t) = v_pixels * SNR(t), the pixel model's SNR at c = 1."
            ),
            paper_calibration=[
                dict(dataset=d, block_size=pb, low_freqs=pl, snr_scale=pc)
                for d, pb, pl, pc in PAPER_SNR_SCALES
            ],
        ),
    )


def _fmt(x: float | None, spec: str) -> str:
    return "inf" if x is None else format(x, spec)


def format_choices(result: Mapping[str, Any], name: str = "") -> str:
    """The table and the recommendation as printed by `launch/dct_stats.py --choices`."""
    b, r = result["block_size"], result["resolution"]
    rfid = result["metric"] == "rfid"
    lines = [
        f"DCTdiff choices for {name or 'the data'}: B={b}, eta={result['eta']}, "
        f"{result['num_images']} images {r}x{r}",
        "",
        "(a) m* table: encode -> decode with dct_tokens (same B, eta) for each low_freqs L; "
        "m = B^2 - L; ratio = 2B^2/L",
    ]
    if not rfid:
        lines.append(
            f"    proxy_fd is a {PROXY_LABEL.upper()}: {PROXY_DEFINITION}. No threshold applied; "
            "it need not grow with m (truncation also adds block-edge power): read it with PSNR."
        )
    header = f"  {'m':>3} {'L':>3} {'ratio':>6} {'PSNR dB':>8} "
    header += f"{'rFID':>8} " if rfid else ""
    header += f"{'proxy_fd':>9} {'c(L)':>7}"
    lines.append(header)
    for row in result["table"]:
        line = f"  {row['m']:>3} {row['low_freqs']:>3} {row['compression']:>6.2f} "
        line += f"{_fmt(row['psnr'], '8.2f'):>8} "
        line += f"{row['rfid']:>8.3f} " if rfid else ""
        line += f"{row['proxy_fd']:>9.4f} {_fmt(row['snr_scale'], '7.2f'):>7}"
        lines.append(line)
    lines.append(f"  {result['m_star_note']}")
    if rfid and result["num_images"] < 10_000:
        lines.append(
            f"  note: rFID from {result['num_images']} images; the paper's threshold is for a "
            "full training set, and rFID from few images is noisy and biased up."
        )
    s = result["snr"]
    sh = s["token_variance_share"]
    lines += [
        "",
        f"(b) SNR scale c, rule: {s['rule']}",
        f"  inputs: B={b}, low_freqs={s['low_freqs']}, eta={result['eta']}, "
        f"{result['num_images']} images {r}x{r}"
        + (f", seed={result['seed']}" if "seed" in result else ""),
        f"  v_pixels = {s['v_pixels']:.6g}  (mean per-dimension variance of u/127.5 - 1)",
        f"  v_tokens = {s['v_tokens']:.6g}  (same for DCTTokens.encode; shares: "
        f"Y {sh['y']:.1%}, Cb {sh['cb']:.1%}, Cr {sh['cr']:.1%}, DC {sh['dc']:.1%})",
        f"  c = v_pixels / v_tokens = {s['ratio']:.4g}  ->  recommended snr_scale = "
        f"{s['snr_scale']}",
        "  why: in the SNR-scaled VP-SDE a dimension of variance v has SNR c * v * "
        "alpha_bar/(1 - alpha_bar); this c gives the tokens, averaged over dimensions, the SNR "
        "the pixel model (inputs in [-1, 1]) has at c = 1.",
        "  paper's hand-set c, for reference only (those datasets are not read here, so the "
        "rule's value on them is not computed):",
        "    "
        + "; ".join(
            f"{c['dataset']} B={c['block_size']} L={c['low_freqs']} c={c['snr_scale']:g}"
            for c in s["paper_calibration"]
        ),
    ]
    return "\n".join(lines)
