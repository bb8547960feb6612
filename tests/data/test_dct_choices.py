"""dctjax.data.dct_choices (m* table, variance-matching SNR scale) against NumPy/scipy evaluations
of their definitions, and launch/dct_stats.py --choices."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.fft
import scipy.linalg

from dctjax.data import dct_choices as dc
from tests.eval.test_metrics import fake_feature_fn

# ------------------------------------------------------------------------------------------------
# NumPy oracle of the dct_tokens round trip (dctdiff.md sections 2 and 3, written out directly)
# ------------------------------------------------------------------------------------------------

RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def _zigzag(b):
    cells = sorted(
        ((u, v) for u in range(b) for v in range(b)),
        key=lambda c: (c[0] + c[1], -c[0] if (c[0] + c[1]) % 2 == 0 else c[0]),
    )
    return np.array([u * b + v for u, v in cells])


def _blocks(plane, b):  # (n, H, W) -> (n, H/b, W/b, b*b)
    n, h, w = plane.shape
    return (
        plane.reshape(n, h // b, b, w // b, b)
        .transpose(0, 1, 3, 2, 4)
        .reshape(n, h // b, w // b, b * b)
    )


def _unblocks(blocks, b):
    n, gh, gw, _ = blocks.shape
    return blocks.reshape(n, gh, gw, b, b).transpose(0, 1, 3, 2, 4).reshape(n, gh * b, gw * b)


def np_encode(images, b, lf, eta):
    x = images.astype(np.float64)
    ycc = x @ RGB_TO_YCC.T  # level-shifted: the Cb/Cr rows sum to 0, Y's to 1
    n, h, w, _ = x.shape
    y = ycc[..., 0] - 128
    chroma = ycc[..., 1:].reshape(n, h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))
    zz = _zigzag(b)

    def coeffs(plane):
        bl = _blocks(plane, b).reshape(
            *plane.shape[:1], plane.shape[1] // b, plane.shape[2] // b, b, b
        )
        return scipy.fft.dctn(bl, axes=(-2, -1), norm="ortho").reshape(*bl.shape[:3], b * b)[
            ..., zz
        ][..., :lf]

    cy, ccb, ccr = coeffs(y), coeffs(chroma[..., 0]), coeffs(chroma[..., 1])
    gh, gw = h // (2 * b), w // (2 * b)
    cy = cy.reshape(n, gh, 2, gw, 2, lf).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh, gw, 4, lf)
    tok = np.concatenate([cy, ccb[:, :, :, None], ccr[:, :, :, None]], axis=3)
    return tok.reshape(n, gh * gw, 6 * lf) / eta


def _upsample2(c):  # (n, h, w) -> (n, 2h, 2w), bilinear, half-pixel centres, edge clamping
    def axis(x, ax):
        m = x.shape[ax]
        src = np.clip((np.arange(2 * m) + 0.5) / 2 - 0.5, 0, m - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, m - 1)
        wt = src - i0
        shape = [1] * x.ndim
        shape[ax] = 2 * m
        wt = wt.reshape(shape)
        return (1 - wt) * np.take(x, i0, axis=ax) + wt * np.take(x, i1, axis=ax)

    return axis(axis(c, 1), 2)


def np_decode(tok, b, lf, eta, h, w):
    n = len(tok)
    gh, gw = h // (2 * b), w // (2 * b)
    t = np.clip(tok, -2, 2).reshape(n, gh, gw, 6, lf) * eta
    full = np.zeros((n, gh, gw, 6, b * b))
    full[..., _zigzag(b)[:lf]] = t
    pix = scipy.fft.idctn(full.reshape(n, gh, gw, 6, b, b), axes=(-2, -1), norm="ortho") + 128
    y = pix[:, :, :, :4].reshape(n, gh, gw, 2, 2, b, b).transpose(0, 1, 3, 5, 2, 4, 6)
    y = y.reshape(n, h, w)
    cb = _upsample2(pix[:, :, :, 4].transpose(0, 1, 3, 2, 4).reshape(n, h // 2, w // 2)) - 128
    cr = _upsample2(pix[:, :, :, 5].transpose(0, 1, 3, 2, 4).reshape(n, h // 2, w // 2)) - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.round(np.clip(rgb, 0, 255)).astype(np.uint8)


def np_log_rapsd(images):
    x = images.astype(np.float64) / 255.0
    n, h, w, _ = x.shape
    power = (np.abs(np.fft.fft2(x, axes=(1, 2), norm="ortho")) ** 2).mean(-1).reshape(n, -1)
    nb = min(h, w) // 2
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")).ravel()
    idx = np.minimum(np.floor(r / r.max() * nb).astype(int), nb - 1)
    idx[0] = nb  # DC excluded
    feats = np.stack([power[:, idx == k].mean(axis=1) for k in range(nb)], axis=1)
    return np.log10(feats + 1e-10)


def np_fd(a, b):
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cm = scipy.linalg.sqrtm(sa @ sb).real
    return float(((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * cm))


def _images(n, size, seed=0, gray=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6, (n, 1, 1, 1 if gray else 3))
    base = 128 + 80 * np.sin(5 * yy[..., None] + 3 * xx[..., None] + phase)
    noise = rng.normal(0, 18, (n, size, size, 1 if gray else 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.repeat(img, 3, axis=-1) if gray else img


# ------------------------------------------------------------------------------------------------


def test_oracle_round_trip_matches_codec():
    # The oracle itself against the jitted codec, so the tests below compare definitions only.
    from dctjax.codec.tokens import images_to_tokens, tokens_to_images

    imgs = _images(3, 16, seed=5)
    for b, lf in ((2, 3), (4, 7)):
        tok = np_encode(imgs, b, lf, 500.0)
        np.testing.assert_allclose(np.asarray(images_to_tokens(imgs, b, lf, 500.0)), tok, atol=3e-5)
        rec = np.asarray(tokens_to_images(np.float32(tok), b, lf, 500.0))
        assert np.abs(rec.astype(int) - np_decode(tok, b, lf, 500.0, 16, 16)).max() <= 1


def scaled_feature_fn(scale_sq=40.0):
    # Fake features scaled so that rFID = 0.5 falls between the candidates' values below: m* bites.
    fn, scale = fake_feature_fn(pool3_dim=6, spatial_dim=2, seed=1), np.sqrt(scale_sq)
    return lambda images: {"pool3": scale * fn(images)["pool3"].astype(np.float64)}


@pytest.mark.parametrize("b,cands,low_freqs", [(2, None, 3), (4, [16, 9, 5, 2], 8)])
def test_table_and_snr_scale_match_definitions(b, cands, low_freqs):
    imgs = _images(24, 16, seed=b)
    eta = 0.93 * 128 * b
    fn = scaled_feature_fn()
    out = dc.dct_choices([imgs[:10], imgs[10:]], b, eta, low_freqs, candidates=cands, feature_fn=fn)
    ls = sorted(cands or range(1, b * b + 1), reverse=True)
    assert [r["low_freqs"] for r in out["table"]] == ls and out["num_images"] == 24
    v_pix = np.var(imgs / 127.5 - 1.0, axis=0).mean()
    rfids = []
    for row, lf in zip(out["table"], ls, strict=True):
        rec = np_decode(np_encode(imgs, b, lf, eta), b, lf, eta, 16, 16)
        mse = np.mean((rec.astype(float) - imgs) ** 2)
        assert row["m"] == b * b - lf and row["compression"] == pytest.approx(2 * b * b / lf)
        assert row["psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=0.02)
        assert row["proxy_fd"] == pytest.approx(
            np_fd(np_log_rapsd(imgs), np_log_rapsd(rec)), rel=0.02, abs=1e-4
        )
        rfid = np_fd(fn(imgs)["pool3"], fn(rec)["pool3"])
        assert row["rfid"] == pytest.approx(rfid, rel=0.02, abs=1e-5)
        rfids.append(rfid)
        v_tok = np.var(np_encode(imgs, b, lf, eta), axis=0).mean()
        assert row["v_tokens"] == pytest.approx(v_tok, rel=1e-5)
        assert row["snr_scale"] == pytest.approx(round(v_pix / v_tok, 2), abs=0.011)
    # m*: the largest m with rFID < 0.5 (here neither the first nor the last candidate).
    want = max(b * b - lf for lf, r in zip(ls, rfids, strict=True) if r < 0.5)
    assert out["m_star"] == want and out["m_star_low_freqs"] == b * b - want
    assert 0 < want < b * b - ls[-1] and f"m* = {want} " in out["m_star_note"]
    s = out["snr"]
    v_tok = np.var(np_encode(imgs, b, low_freqs, eta), axis=0).mean()
    assert s["rule"] == "variance matching" and s["low_freqs"] == low_freqs
    assert s["v_pixels"] == pytest.approx(v_pix, rel=1e-9)
    assert s["v_tokens"] == pytest.approx(v_tok, rel=1e-5)
    assert s["snr_scale"] == pytest.approx(v_pix / v_tok, abs=0.011)


@pytest.mark.parametrize("b", [2, 4])
def test_grayscale_closed_forms(b):
    # Grey: Cb = Cr = 128, so with L = B^2 the orthonormal DCT keeps the pixels' total variance in
    # 4 of 6 blocks: v_tokens = v_u / (1.5 eta^2), v_pixels = v_u / 127.5^2, c = 1.5 eta^2 / 127.5^2.
    # The round trip is lossless: no PSNR, rFID = proxy = 0, and m* = 0 at any threshold.
    imgs = _images(12, 16, seed=7, gray=True)
    eta = 0.93 * 128 * b
    out = dc.dct_choices([imgs], b, eta, b * b, candidates=[b * b], feature_fn=fake_feature_fn())
    assert out["snr"]["snr_scale"] == pytest.approx(round(1.5 * eta**2 / 127.5**2, 2), abs=1e-9)
    assert out["snr"]["token_variance_share"]["y"] == pytest.approx(1.0)
    row = out["table"][0]
    assert row["psnr"] is None and row["rfid"] == 0.0 and row["proxy_fd"] == 0.0
    assert out["m_star"] == 0


def test_proxy_only_no_m_star_deterministic_and_printed():
    imgs = _images(10, 16, seed=3)
    run = lambda: dc.dct_choices(iter([imgs[:4], imgs[4:]]), 4, 476.25, 8, candidates=[16, 8])  # noqa: E731
    a, b = run(), run()
    assert a == b and a["metric"] == "proxy" and a["m_star"] is None
    assert all(r["rfid"] is None for r in a["table"])
    assert a["proxy"]["label"] == "proxy, not rFID"
    text = dc.format_choices(a, "gen")
    assert text == dc.format_choices(b, "gen")
    s = a["snr"]
    for piece in (
        "variance matching", "PROXY, NOT RFID", "no m*", "B=4", "low_freqs=8", "eta=476.25",
        "10 images", f"{s['v_pixels']:.6g}", f"{s['v_tokens']:.6g}",
        f"recommended snr_scale = {s['snr_scale']}", "FFHQ 256 B=4 L=8 c=1",
    ):  # fmt: skip
        assert piece in text, piece
    assert "rFID" not in text.split("\n")[4]  # no rFID column without a feature function


def test_moments_and_errors():
    x = np.random.default_rng(0).normal(3.0, 2.0, (50, 4, 3))
    m = dc.Moments().update(x[:7]).update(x[7:8]).update(x[8:])
    np.testing.assert_allclose(m.variance, np.var(x, axis=0).reshape(-1), rtol=1e-12)
    imgs = _images(4, 16)
    with pytest.raises(ValueError, match="at least 2"):
        dc.dct_choices([imgs[:1]], 2, 240.0, 4)
    with pytest.raises(ValueError, match="low_freqs"):
        dc.dct_choices([imgs], 2, 240.0, 4, candidates=[5])
    with pytest.raises(ValueError, match="square"):
        dc.dct_choices([imgs[:, :8]], 2, 240.0, 4)
    with pytest.raises(ValueError, match="all the same size"):
        dc.dct_choices([imgs, _images(2, 8)], 2, 240.0, 4)
    with pytest.raises(ValueError, match="no variance"):
        dc.dct_choices([np.zeros((3, 16, 16, 3), np.uint8)], 2, 240.0, 4, candidates=[4])


def test_cli_choices(tmp_path):
    out = tmp_path / "stats.json"
    cmd = [
        sys.executable, "launch/dct_stats.py", "--data=synthetic", "--resolution=16",
        "--block_size=4", "--low_freqs=8", "--num_images=12", "--batch_size=6", "--choices",
        "--choices_num_images=8", "--choices_low_freqs=16,8", f"--output={out}",
    ]  # fmt: skip
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    stats = json.loads(out.read_text())
    ch = stats["choices"]
    assert stats["eta"] == ch["eta"] and len(stats["entropy_y"]) == 16  # the usual fields stay
    assert ch["num_images"] == 8 and ch["seed"] == 0 and ch["metric"] == "proxy"
    assert [r["low_freqs"] for r in ch["table"]] == [16, 8] and ch["snr"]["low_freqs"] == 8
    assert "variance matching" in res.stdout and "PROXY, NOT RFID" in res.stdout
    assert f"recommended snr_scale = {ch['snr']['snr_scale']}" in res.stdout


RFID_CLI = """
import runpy, sys
import numpy as np
import dctjax.eval.inception as inc
from tests.data.test_dct_choices import scaled_feature_fn

def fake_load_inception(weights, **kwargs):  # the FID Inception's place, without its weights
    assert weights == "fake_inception.npz", weights
    return scaled_feature_fn()

inc.load_inception = fake_load_inception
sys.argv = ["launch/dct_stats.py"] + sys.argv[1:]
runpy.run_path("launch/dct_stats.py", run_name="__main__")
"""


def test_cli_choices_with_inception_weights(tmp_path):
    out = tmp_path / "stats.json"
    cmd = [
        sys.executable, "-c", RFID_CLI, "--data=synthetic", "--resolution=16", "--block_size=2",
        "--low_freqs=4", "--num_images=8", "--choices", "--choices_low_freqs=4,1",
        "--inception_weights=fake_inception.npz", f"--output={out}",
    ]  # fmt: skip
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    ch = json.loads(out.read_text())["choices"]
    assert ch["metric"] == "rfid" and [r["low_freqs"] for r in ch["table"]] == [4, 1]
    assert all(r["rfid"] >= 0 for r in ch["table"]) and "rFID" in res.stdout
    assert "PROXY, NOT RFID" not in res.stdout and ch["m_star_note"] in res.stdout
