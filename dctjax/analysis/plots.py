"""PNG figures of `spectrum.analyze` results (matplotlib, object API: no pyplot state, no display).

    paths = write_figures(results, out_dir, examples=spectrum.upsampling_examples(images))

writes spectra_<transform>.png (log RAPSD against log frequency for several t, measured x_t as
solid lines, alpha_t^2 RAPSD(x0) + sigma_t^2 dashed, the flat noise floors sigma_t^2 dotted and the
crossovers marked: the figure DCTdiff uses), crossover.png (crossover frequency against t),
upsampling.png (RAPSD of each x2 upsampler against the original, and their PSNR), with
examples, upsampling_examples.png and, when the results hold 'latent_spectra' (one entry per
autoencoder, `spectrum.latent_spectra`), latent_spectra.png (image against latent normalised RAPSD
with the fitted slopes, and the 16-bin ESM distributions p_x against p_z; all autoencoders
overlaid).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

__all__ = [
    "plot_crossover",
    "plot_latent_spectra",
    "plot_spectra",
    "plot_upsampling",
    "plot_upsampling_examples",
    "write_figures",
]

_DPI = 120


def _positive(values) -> np.ndarray:
    """float64 array with non-positive and missing entries as NaN (so log axes skip them)."""
    v = np.array([np.nan if x is None else x for x in np.ravel(values)], np.float64)
    v[~(v > 0)] = np.nan
    return v.reshape(np.shape(values))


_FREQ_TICKS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _log_axes(ax, freq_axis: str = "x") -> None:
    """Readable ticks on a short log axis: frequencies at 1-2-5 steps, no minor labels."""
    axis = ax.xaxis if freq_axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if freq_axis == "x" else ax.get_ylim()
    axis.set_major_locator(FixedLocator([t for t in _FREQ_TICKS if lo <= t <= hi]))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.2)


def _save(fig: Figure, path: str) -> str:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def plot_spectra(results: dict[str, Any], transform: str, path: str) -> str:
    """log RAPSD(x_t) against log f for each t, with the VP prediction and noise floors."""
    s = results["spectra"][transform]
    f = np.asarray(s["freqs"], np.float64)
    ts, sig = results["ts"], np.asarray(results["sigma_t"], np.float64)
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    ax.loglog(f, _positive(s["rapsd_x0"]), "k-", lw=2.2, label="RAPSD(x0)")
    law = s["power_law"]
    lo, hi = law["f_range"]
    ff = np.geomspace(lo, hi, 20)
    ax.loglog(
        ff,
        law["k"] * ff ** (-law["alpha"]),
        color="0.5",
        ls=(0, (1, 1)),
        lw=3,
        label=rf"fit $K f^{{-\alpha}}$, $\alpha$ = {law['alpha']:.2f}",
    )
    cmap = colormaps["viridis"]
    for i, t in enumerate(ts):
        if sig[i] <= 0:
            continue  # t = 0: x_t = x0
        c = cmap(i / max(len(ts) - 1, 1))
        ax.loglog(f, _positive(s["rapsd_xt"][i]), "-", color=c, lw=1.3, label=f"t = {t:g}")
        ax.loglog(f, _positive(s["predicted"][i]), "--", color=c, lw=1)
        ax.axhline(sig[i] ** 2, color=c, ls=":", lw=0.8)
        fc = s["crossover"]["data"][i]
        if fc is not None and 0 < fc < math.inf and np.isfinite(fc):
            ax.plot([fc], [2 * sig[i] ** 2], "o", color=c, ms=5, mec="k", mew=0.5)
    ax.set_xlabel("frequency (cycles / pixel)")
    ax.set_ylabel("power")
    sched = results["schedule"]
    ax.set_title(
        rf"{transform.upper()} RAPSD of $x_t = \alpha_t x_0 + \sigma_t \epsilon$ (VP, "
        rf"$\beta$ {sched['beta_min']:g} to {sched['beta_max']:g}, SNR scale "
        f"{sched['snr_scale']:g}; x in [-1, 1])\nsolid: measured, dashed: "
        r"$\alpha_t^2$ RAPSD$(x_0) + \sigma_t^2$, dotted: $\sigma_t^2$, dots: crossover",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    _log_axes(ax)
    return _save(fig, path)


def plot_crossover(results: dict[str, Any], path: str) -> str:
    """Crossover frequency against t for each transform and definition."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    ts = np.asarray(results["ts"], np.float64)
    styles = {"data": "o-", "noisy": "s--", "power_law": "^:"}
    colors = {"dft": "C0", "dct": "C1"}
    for transform, s in results["spectra"].items():
        for kind, style in styles.items():
            v = _positive(s["crossover"][kind])
            v[~np.isfinite(v)] = np.nan
            ax.semilogy(ts, v, style, color=colors.get(transform), label=f"{transform}: {kind}")
    f0 = min(min(s["freqs"]) for s in results["spectra"].values())
    ax.axhline(f0, color="0.4", lw=0.8, ls="--", label="lowest bin (below: noise everywhere)")
    ax.set_xlabel("t")
    ax.set_ylabel("crossover frequency (cycles / pixel)")
    ax.set_title(
        r"Frequency above which noise dominates ($\alpha_t^2$ RAPSD$(x_0) = \sigma_t^2$)"
        "\n"
        r"data: clean spectrum, noisy: RAPSD$(x_t) = 2\sigma_t^2$, "
        r"power_law: $(K\,\mathrm{SNR}_t)^{1/\alpha}$",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    _log_axes(ax, "y")
    return _save(fig, path)


def plot_upsampling(results: dict[str, Any], path: str) -> str:
    """RAPSD of the x2 upsamplers against the original, and their PSNR."""
    up = results["upsampling"]
    f = np.asarray(up["freqs"], np.float64)
    fig = Figure(figsize=(11, 4.5))
    ax, bx = fig.subplots(1, 2)
    ax.loglog(f, _positive(up["rapsd_original"]), "k-", lw=2.2, label="original")
    names = list(up["methods"])
    for i, name in enumerate(names):
        m = up["methods"][name]
        ax.loglog(
            f,
            _positive(m["rapsd"]),
            color=f"C{i}",
            label=f"{name} (high-band |log10| err {m['high_band_log10_error']:.2f})",
        )
    ax.axvspan(*up["high_band"], color="0.9", zorder=0)
    ax.set_xlabel("frequency (cycles / pixel)")
    ax.set_ylabel("power")
    ax.set_title("RAPSD after 2x2 box down + x2 up (shaded: removed band)", fontsize=9)
    ax.legend(fontsize=7)
    _log_axes(ax)
    psnr = [up["methods"][n]["psnr_db"] or 0.0 for n in names]
    bars = bx.bar(names, psnr, color=[f"C{i}" for i in range(len(names))])
    bx.bar_label(bars, fmt="%.2f", fontsize=8)
    bx.set_ylim(min(psnr) - 3, max(psnr) + 2)
    bx.set_ylabel("PSNR (dB, peak-to-peak 2 in [-1, 1])")
    bx.set_title(
        f"x2 upsampling PSNR, {results['num_images']} images, DCT block {up['block_size']}",
        fontsize=9,
    )
    return _save(fig, path)


def plot_upsampling_examples(examples: dict[str, np.ndarray], path: str) -> str:
    """A grid: one row per image, one column per reconstruction."""
    names = list(examples)
    rows = examples[names[0]].shape[0]
    fig = Figure(figsize=(1.6 * len(names), 1.7 * rows))
    axes = np.asarray(fig.subplots(rows, len(names), squeeze=False))
    for j, name in enumerate(names):
        for i in range(rows):
            img = examples[name][i]
            axes[i, j].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(name, fontsize=8)
    return _save(fig, path)


def _slope(law: dict[str, Any]) -> str:
    return "n/a" if law["alpha"] is None else f"{law['alpha']:.2f}"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def plot_latent_spectra(latent: dict[str, dict[str, Any]], path: str) -> str:
    """Image against latent spectra of one or more autoencoders ({label: `latent_spectra` result,
    JSON-ready}): normalised RAPSD in log-log with the fitted slopes, and the ESM distributions."""
    fig = Figure(figsize=(12, 4.8))
    ax, bx = fig.subplots(1, 2)
    single = len(latent) == 1
    # Draw the images' spectrum once per image shape, in black when every autoencoder saw the same.
    shapes = {(tuple(r["image_shape"]), r["transform"]) for r in latent.values()}
    drawn: set[tuple] = set()
    for i, (label, r) in enumerate(latent.items()):
        color = f"C{i}"
        img, lat = r["image"], r["latent"]
        key = (tuple(r["image_shape"]), r["transform"])
        if key not in drawn:
            drawn.add(key)
            h, w, _ = r["image_shape"]
            ax.loglog(
                img["freqs"],
                _positive(img["rapsd_normalized"]),
                "-" if len(shapes) == 1 else "--",
                color="k" if len(shapes) == 1 else color,
                lw=2.2,
                label=rf"image {h}x{w}, $\alpha$ = {_slope(img['power_law'])}",
            )
        h, w, c = r["latent_shape"]
        ax.loglog(
            lat["freqs"],
            _positive(lat["rapsd_normalized"]),
            "o-",
            color=color,
            ms=3,
            label=rf"{label}: latent {h}x{w}x{c}, $\alpha$ = {_slope(lat['power_law'])}",
        )
        k = np.arange(1, len(r["esm_p_z"]) + 1)
        prefix = "" if single else f"{label}: "
        bx.plot(
            k,
            _nan(r["esm_p_x"]),
            "s--",
            color="k" if single else color,
            ms=3,
            lw=1,
            label=rf"{prefix}image $p_x$ ($\delta$ = {r['esm_delta']:g}, the target)",
        )
        bx.plot(
            k,
            _nan(r["esm_p_x_raw"]),
            ":",
            color="0.5" if single else color,
            lw=1,
            label=rf"{prefix}image $p_x$ ($\delta$ = 0)",
        )
        bx.plot(
            k,
            _nan(r["esm_p_z"]),
            "o-",
            color=color,
            ms=3,
            label=f"{prefix}latent $p_z$: KL {_num(r['esm_kl'])} (raw {_num(r['esm_kl_raw'])})",
        )
    lo, hi = next(iter(latent.values()))["latent"]["power_law"]["f_range"]
    ax.axvspan(lo, hi, color="0.93", zorder=0)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("frequency (cycles / pixel of its own grid)")
    ax.set_ylabel("power / mean non-DC power")
    first = next(iter(latent.values()))
    ax.set_title(
        f"{first['transform'].upper()} RAPSD of the images and of the posterior means "
        f"({first['num_images']} images)\nnormalised: a white spectrum is 1 (dotted); shaded: "
        r"fit range of $K f^{-\alpha}$",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower left")
    _log_axes(ax)
    bx.set_xlabel("ESM band k (radial DCT bins; the image resized to the latent grid)")
    bx.set_ylabel("probability")
    bx.set_title(r"ESM distributions: KL($p_x \| p_z$) is the ESM loss", fontsize=9)
    bx.legend(fontsize=7)
    bx.grid(True, alpha=0.2)
    return _save(fig, path)


def write_figures(
    results: dict[str, Any], out_dir: str, examples: dict[str, np.ndarray] | None = None
) -> list[str]:
    """Writes every figure of `results` (JSON-ready form, see `spectrum.to_json`) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [
        plot_spectra(results, t, os.path.join(out_dir, f"spectra_{t}.png"))
        for t in results["spectra"]
    ]
    paths.append(plot_crossover(results, os.path.join(out_dir, "crossover.png")))
    paths.append(plot_upsampling(results, os.path.join(out_dir, "upsampling.png")))
    if examples is not None:
        paths.append(
            plot_upsampling_examples(examples, os.path.join(out_dir, "upsampling_examples.png"))
        )
    if results.get("latent_spectra"):
        paths.append(
            plot_latent_spectra(
                results["latent_spectra"], os.path.join(out_dir, "latent_spectra.png")
            )
        )
    return paths
