"""Spectrum Matching at small scale: plain vs ESM vs DSM autoencoders, and the same latent diffusion
model on each, beside DCTdiff and the pixel U-ViT (`benchmarks/quality_small.py`).

    python benchmarks/spectrum_matching_small.py [--datasets=synthetic,fashion_mnist]
        [--ae_steps=1500] [--ldm_steps=1500] [--num_samples=500] [--nfes=10,20,50]
        [--recipes=sdvae,esm,dsm] [--workdir=runs/spectrum_matching_small]
        [--baselines=dct,pixel] [--json=benchmarks/results/spectrum_matching_small.json]

For each dataset available offline (as quality_small):
  1. trains one autoencoder per recipe with the recipe of `configs/autoencoder_quickstart.py`
     (32 px -> 8x8x4 latents, L1 only offline: no LPIPS and no GAN, equal steps and batch):
       sdvae: + KL 1e-6 (the baseline, "SD-VAE");
       esm:   the KL replaced by the ESM loss (weight 0.01, delta 1; spec §4.3);
       dsm:   + KL 1e-6 + shared spectral masking, k ~ U{0, 8, 10, 12} (spec §4.4);
  2. reconstruction on `num_samples` held-out images: PSNR, the proxy Frechet distance of the
     reconstructions, the fitted power-law slope of the latents' RAPSD (flatter = smaller) and the
     ESM KL of the latents to the flattened image spectrum;
  3. trains the same latent diffusion model on each (`latents` representation: per-channel
     standardised posterior means; U-ViT with patch 2 on 8x8x4 = 16 tokens, the token count of
     DCTdiff at B=4; the quickstart's diffusion recipe: x0-prediction, 1/std weighting, SNR scale 1
     since the latents are standardised) and reports the proxy FD of its samples against NFE.
  4. beside them, DCTdiff (B=4, 16 tokens) and the pixel U-ViT (patch 4, 64 tokens) of
     quality_small with the same U-ViT, steps, batch and recipe (--baselines).
The proxy FD is the quality_small one (a small CNN's features; NOT FID), on the same real images.
The seed's claim: ESM/DSM latents diffuse better than plain ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from benchmarks import quality_small as qs
from benchmarks._timing import print_table, write_json
from configs import autoencoder_quickstart, quickstart
from dctjax.analysis import spectrum
from dctjax.codec import spectral
from dctjax.eval.metrics import frechet_distance
from dctjax.sampling import load_workdir_sampler
from dctjax.train import checkpoint, loop

RECIPES = ("sdvae", "esm", "dsm")


def ae_config(name: str, recipe: str, args: argparse.Namespace):
    c = autoencoder_quickstart.get_config(recipe)
    src_name, kwargs, _ = qs.DATASETS[name]
    c.dataset.name = src_name
    c.dataset.num_examples = kwargs.get("num_examples")
    c.total_steps = args.ae_steps
    c.checkpoint_every = args.ae_steps
    c.eval.every = 0
    c.log_every = 100
    return c


def ldm_config(name: str, ae_workdir: str, args: argparse.Namespace):
    c = quickstart.get_config()
    src_name, kwargs, _ = qs.DATASETS[name]
    c.dataset.name = src_name
    c.dataset.num_examples = kwargs.get("num_examples")
    c.representation = "latents"
    c.representation_kwargs = dict(autoencoder=ae_workdir, stats_examples=2048)
    c.model = "uvit_pixel"
    c.model_kwargs = dict(
        size="T", patch_size=2, embed_dim=args.embed_dim, depth=args.depth, num_heads=4,
        attention="auto",
    )  # fmt: skip
    c.diffusion.snr_scale = 1.0
    c.total_steps = args.ldm_steps
    c.checkpoint_every = args.ldm_steps
    c.sample_every = args.ldm_steps
    c.log_every = 100
    c.eval.every = 0
    return c


def train_once(config, workdir: str, steps: int) -> float:
    os.makedirs(workdir, exist_ok=True)
    with checkpoint.Checkpointer(workdir, handle_sigterm=False) as ck:
        done = (ck.latest_step() or 0) >= steps
    t0 = time.perf_counter()
    if not done:
        loop.train_and_evaluate(config, workdir)
    return time.perf_counter() - t0


def reconstruction(ae_workdir: str, images: np.ndarray, feats, ref) -> dict:
    sampler = load_workdir_sampler(ae_workdir)
    rec = sampler.sample(jax.random.key(0), len(images), context=images, task="reconstruct")
    mse = np.mean((rec.astype(np.float64) - images) ** 2)
    model, params = sampler.model, sampler.params
    encode = jax.jit(lambda p, u: model.module(p).encode(u.astype(np.float32) / 127.5 - 1)[0])
    lat = np.concatenate(
        [np.asarray(encode(params, images[i : i + 250])) for i in range(0, len(images), 250)]
    )
    ps = spectral.rapsd(lat - lat.mean(axis=(1, 2), keepdims=True))
    x = images[:256].astype(np.float32) / 127.5 - 1
    return {
        "psnr": 10 * np.log10(255.0**2 / mse),
        "proxy_fd": frechet_distance(*ref, *qs.stats(feats(rec))),
        "latent_psd_slope": spectrum.fit_power_law(ps.freqs, ps.power, (0.05, 0.6)).alpha,
        "latent_esm_kl": float(spectral.esm_loss(x, lat[:256])),
    }


def run(args: argparse.Namespace) -> dict:
    results = {"settings": vars(args).copy(), "datasets": {}}
    ae_rows, gen_rows = [], []
    nfes = [int(v) for v in args.nfes.split(",")]
    for name in args.datasets.split(","):
        if not qs.available(name):
            print(f"[skip] {name}: not installed")
            continue
        classifier, acc = qs.train_classifier(name, args.classifier_steps)
        feats = qs.feature_fn(classifier)
        src, test = qs.source(name), qs.source(name, "test")
        order = np.random.default_rng(1).permutation(len(src))
        n = args.num_samples
        real, _ = qs.images_of(src, order[:n])
        ref = qs.stats(feats(real))
        held_out, _ = qs.images_of(test, np.arange(min(n, len(test))))
        entry = {"classifier_accuracy": acc, "autoencoders": {}}
        for recipe in args.recipes.split(","):
            ae_dir = os.path.join(args.workdir, f"{name}_ae_{recipe}")
            ae_s = train_once(ae_config(name, recipe, args), ae_dir, args.ae_steps)
            rec = reconstruction(ae_dir, held_out, feats, ref)
            ldm_dir = os.path.join(args.workdir, f"{name}_ldm_{recipe}")
            ldm_s = train_once(ldm_config(name, ae_dir, args), ldm_dir, args.ldm_steps)
            sampler = load_workdir_sampler(ldm_dir)
            gen = {}
            for nfe in nfes:
                images = sampler.sample(jax.random.key(0), n, sampler="dpm_solver", nfe=nfe)
                gen[nfe] = frechet_distance(*ref, *qs.stats(feats(images)))
            entry["autoencoders"][recipe] = dict(
                reconstruction=rec, generation_proxy_fd=gen, ae_train_s=ae_s, ldm_train_s=ldm_s
            )
            ae_rows.append(dict(dataset=name, recipe=recipe, **rec))
            gen_rows.append(
                dict(dataset=name, model=f"latent U-ViT on {recipe} AE",
                     steps=args.ldm_steps, **{f"nfe{k}": v for k, v in gen.items()})
            )  # fmt: skip
        qs_args = argparse.Namespace(
            steps=args.ldm_steps, batch_size=None, embed_dim=args.embed_dim, depth=args.depth,
            workdir=args.workdir,
        )  # fmt: skip
        for kind in filter(None, args.baselines.split(",")):
            workdir, train_s = qs.train(name, kind, qs_args)
            sampler = load_workdir_sampler(workdir)
            gen = {}
            for nfe in nfes:
                images = sampler.sample(jax.random.key(0), n, sampler="dpm_solver", nfe=nfe)
                gen[nfe] = frechet_distance(*ref, *qs.stats(feats(images)))
            entry[kind] = dict(generation_proxy_fd=gen, train_s=train_s)
            gen_rows.append(
                dict(dataset=name, model=qs.KINDS[kind], steps=args.ldm_steps,
                     **{f"nfe{k}": v for k, v in gen.items()})
            )  # fmt: skip
        results["datasets"][name] = entry
    print("\nReconstruction (held-out; proxy FD of reconstructions; latent PSD slope)")
    print_table(ae_rows, ["dataset", "recipe", "psnr", "proxy_fd", "latent_psd_slope",
                          "latent_esm_kl"])  # fmt: skip
    print("\nGeneration: proxy Frechet distance vs NFE (DPM-Solver; NOT FID; lower is better)")
    print_table(gen_rows, ["dataset", "model", "steps", *[f"nfe{k}" for k in nfes]])
    return results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="synthetic,fashion_mnist")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--ae_steps", type=int, default=1500)
    p.add_argument("--ldm_steps", type=int, default=1500)
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--nfes", default="10,20,50")
    p.add_argument("--embed_dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--classifier_steps", type=int, default=1500)
    p.add_argument("--workdir", default="runs/spectrum_matching_small")
    p.add_argument("--baselines", default="dct,pixel", help="quality_small kinds beside them")
    p.add_argument("--json", default="benchmarks/results/spectrum_matching_small.json")
    args = p.parse_args(argv)
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        p.error(f"unknown --recipes {unknown}; choose from {list(RECIPES)}")
    return args


def main(argv=None) -> dict:
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
    jax.config.update("jax_threefry_partitionable", True)
    args = parse_args(argv)
    results = run(args)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
