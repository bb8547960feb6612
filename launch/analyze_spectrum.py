"""Diffusion as spectral autoregression (DCTdiff Theorem 5.1, VP form) and DCT upsampling on a dataset.

    python launch/analyze_spectrum.py --data=synthetic --num_images=256 --out=runs/spectrum
    python launch/analyze_spectrum.py --data=idx --resolution=32 --snr_scale=2 --out=runs/fmnist
    python launch/analyze_spectrum.py --data=/data/ffhq256_prepared --resolution=64 --out=runs/ffhq
    python launch/analyze_spectrum.py --data=synthetic --autoencoder=runs/ae,runs/ae_esm --out=runs/ae

--data is a tfds name, a folder prepared by launch/prepare_data.py, 'synthetic' or 'idx'
(Fashion-MNIST). Images are scaled to [-1, 1] (x = u / 127.5 - 1), as the pixel model sees them.
For each t of --ts, x_t = alpha_t x0 + sigma_t eps with the VP schedule of --beta_min, --beta_max
and --snr_scale; the script compares RAPSD(x_t) with alpha_t^2 RAPSD(x0) + sigma_t^2 (DFT and
full-image DCT), fits RAPSD(x0) ~ K f^-alpha and reports the crossover frequency above which noise
dominates. It then box-downsamples the images by 2 and upsamples them back by nearest, bilinear,
bicubic and DCT (--block_size), reporting PSNR and the high-band RAPSD log error.
With --autoencoder=WORKDIR[,WORKDIR...] (trained `autoencoder` family runs) it also encodes the
same images (read again at the autoencoder's resolution when that differs from theirs: the same
indices, centre-cropped and resized by the data pipeline) and compares the RAPSD of the images
with that of the posterior means (DCT if --transforms has it), each normalised to unit mean
non-DC power on its own grid, with both power-law slopes, the ESM KL (delta 1 and 0) and the
latents' per-channel std: key 'latent_spectra' of the JSON (one entry per autoencoder, named by
the workdir's basename) and latent_spectra.png (all autoencoders overlaid).
Writes DIR/spectrum.json (every figure; see dctjax.analysis.spectrum) and PNG plots in DIR.
"""

import json
import os

from absl import app, flags

from dctjax.diffusion.schedules import VPSchedule
from dctjax.errors import run_main, user_errors

_VP = VPSchedule()

flags.DEFINE_string(
    "data", None, "tfds name, prepared folder, 'synthetic' or 'idx'.", required=True
)
flags.DEFINE_string("out", None, "Output folder for spectrum.json and the PNGs.", required=True)
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_string("data_dir", None, "tfds (or idx) data_dir.")
flags.DEFINE_integer("resolution", None, "Resize (centre crop) to this size; default: native.")
flags.DEFINE_integer("num_images", 256, "Random images to analyse.")
flags.DEFINE_integer("seed", 0, "Seed of the image subset and of the noise.")
flags.DEFINE_float("snr_scale", 1.0, "SNR scale c of the VP schedule (DCTdiff).")
flags.DEFINE_float("beta_min", _VP.beta_min, "VP beta(0).")
flags.DEFINE_float("beta_max", _VP.beta_max, "VP beta(1).")
flags.DEFINE_list("ts", ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1"],
                  "Times t in [0, 1].")  # fmt: skip
flags.DEFINE_integer("num_bins", None, "Radial bins; default min(H, W) // 2.")
flags.DEFINE_integer("num_draws", 4, "Noise draws per image and t.")
flags.DEFINE_list("transforms", ["dft", "dct"], "RAPSD transforms: dft and/or dct.")
flags.DEFINE_list("fit_range", ["0.05", "0.4"], "Power-law fit range, cycles/pixel.")
flags.DEFINE_integer("block_size", 4, "DCT upsampling block size B.")
flags.DEFINE_integer("batch_size", 256, "Images per device batch.")
flags.DEFINE_list(
    "autoencoder", [], "Autoencoder workdir(s), comma-separated: adds their latent spectra."
)
flags.DEFINE_integer("ae_batch_size", 64, "Images per autoencoder encoding batch.")
FLAGS = flags.FLAGS


def _floats(values, name):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} must be a list of numbers, got {','.join(values)}.") from None


def _load_autoencoders(workdirs):
    """{label: (workdir, sampler)} of the autoencoder workdirs, labelled by basename (made unique)."""
    from dctjax.sampling import load_workdir_sampler

    out = {}
    for workdir in workdirs:
        if not os.path.exists(workdir):
            raise FileNotFoundError(f"--autoencoder: {workdir} does not exist.")
        sampler = load_workdir_sampler(workdir)
        family = sampler.model.family.name
        if family != "autoencoder":
            raise ValueError(
                f"--autoencoder: {workdir} is a {family!r} run, not an 'autoencoder' one."
            )
        label = os.path.basename(os.path.normpath(workdir)) or workdir
        base, i = label, 2
        while label in out:
            label, i = f"{base}_{i}", i + 1
        out[label] = (workdir, sampler)
    return out


def _encoder(sampler):
    """x in [-1, 1] -> the posterior means of the sampler's autoencoder, jitted."""
    import jax

    model, params = sampler.model, sampler.params
    encode = jax.jit(lambda p, x: model.module(p).encode(x)[0])  # params as an argument, not
    return lambda x: encode(params, x)  # constants folded into the program


def main(argv):
    del argv
    from dctjax.analysis import plots, spectrum
    from dctjax.data import sources

    with user_errors():
        schedule = VPSchedule(FLAGS.beta_min, FLAGS.beta_max, FLAGS.snr_scale)
        ts = _floats(FLAGS.ts, "ts")
        fit_range = _floats(FLAGS.fit_range, "fit_range")
        if len(fit_range) != 2:
            raise ValueError(f"--fit_range takes two numbers, got {FLAGS.fit_range}.")
        source = sources.make_source(
            FLAGS.data, FLAGS.split, data_dir=FLAGS.data_dir, resolution=FLAGS.resolution
        )
        images = spectrum.sample_images(source, FLAGS.num_images, FLAGS.seed, FLAGS.batch_size)
        autoencoders = _load_autoencoders(FLAGS.autoencoder)
        results = spectrum.analyze(
            images,
            schedule,
            ts,
            transforms=FLAGS.transforms,
            num_draws=FLAGS.num_draws,
            num_bins=FLAGS.num_bins,
            fit_range=tuple(fit_range),
            block_size=FLAGS.block_size,
            seed=FLAGS.seed,
            batch_size=FLAGS.batch_size,
        )
        latent = {}
        transform = "dct" if "dct" in FLAGS.transforms else FLAGS.transforms[0]
        for label, (workdir, sampler) in autoencoders.items():
            res = sampler.config.resolution
            ae_images = images
            if images.shape[1:3] != (res, res):  # the same indices, at the AE's resolution
                ae_source = sources.make_source(
                    FLAGS.data, FLAGS.split, data_dir=FLAGS.data_dir, resolution=res
                )
                ae_images = spectrum.sample_images(
                    ae_source, FLAGS.num_images, FLAGS.seed, FLAGS.batch_size
                )
            latent[label] = {
                "workdir": os.path.abspath(workdir),
                "step": sampler.step,
                **spectrum.latent_spectra(
                    ae_images,
                    _encoder(sampler),
                    None,  # each grid its own min(H, W) // 2 bins
                    FLAGS.ae_batch_size,
                    transform=transform,
                    fit_range=tuple(fit_range),
                ),
            }
        if latent:
            results["latent_spectra"] = latent
    results = {"data": FLAGS.data, "split": FLAGS.split, **spectrum.to_json(results)}
    os.makedirs(FLAGS.out, exist_ok=True)
    json_path = os.path.join(FLAGS.out, "spectrum.json")
    with open(json_path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, allow_nan=False)
    os.replace(json_path + ".tmp", json_path)
    examples = spectrum.upsampling_examples(images, FLAGS.block_size)
    paths = plots.write_figures(results, FLAGS.out, examples)

    print(f"{results['num_images']} images {results['image_shape']}, VP {results['schedule']}")
    for transform, s in results["spectra"].items():
        law, vp = s["power_law"], s["vp_identity"]
        print(
            f"[{transform}] power law alpha={law['alpha']:.3f} (R^2 {law['r2']:.3f}); VP identity "
            f"median rel err {vp['median_rel_error']:.4f}, max {vp['max_rel_error']:.4f}"
        )
        print("  t      crossover (data / noisy / power law), cycles/pixel")
        f0 = min(s["freqs"])
        for i, t in enumerate(results["ts"]):
            c = s["crossover"]
            vals = "  ".join(_fmt(c[k][i], f0) for k in ("data", "noisy", "power_law"))
            print(f"  {t:<5g}  {vals}  {c['regime'][i]}")
    for name, m in results["upsampling"]["methods"].items():
        print(
            f"[upsample x2] {name:8s} PSNR {m['psnr_db']:.2f} dB  high-band |log10 RAPSD ratio| "
            f"{m['high_band_log10_error']:.3f} (bias {m['high_band_log10_bias']:+.3f})"
        )
    for label, r in results.get("latent_spectra", {}).items():
        img, lat = r["image"]["power_law"]["alpha"], r["latent"]["power_law"]["alpha"]
        std = ", ".join(f"{v:.3f}" for v in r["latent"]["channel_std"])
        print(
            f"[latent {label}] {r['transform']} slope image {_opt(img)}, latent {_opt(lat)} "
            f"{r['latent_shape']}; ESM KL {_opt(r['esm_kl'], 4)} (raw {_opt(r['esm_kl_raw'], 4)}); "
            f"channel std {std}"
        )
    print("wrote", json_path, *paths)


def _opt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt(v, f0):
    """A crossover: 'none' above the band (signal everywhere), '<f0' below its lowest bin."""
    if v is None:
        return "   none"
    return f"{'<' + format(f0, '.4f'):>7}" if v == 0 else f"{v:7.4f}"


if __name__ == "__main__":
    app.run(lambda argv: run_main(main, argv))
