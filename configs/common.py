"""Shared pieces of the dctjax configs: the DCTdiff base config and the variant-string parser.

Every config file exposes `get_config(arg=None)`; `arg` is a variant string such as
'pixel,runlocal' or 'size=S,batch_size=64' selected with `--config=configs/x.py:VARIANT`.
  - `pixel`: the matching pixel-space U-ViT baseline (representation 'pixels', model 'uvit_pixel',
    the config's `pixel_patch_size`), with the plain VP-SDE (c = 1) of the U-ViT baselines;
    everything else equal: the paper's comparison.
  - `latents=WORKDIR`: the latent U-ViT baseline on a frozen autoencoder run (the `latents`
    representation, U-ViT with patch `latent_patch=2`, SNR scale 1 on standardised latents).
  - `runlocal`: a smoke-test size for a laptop (tiny model, small batch, few steps).
  - `key=value`: any top-level field (ints, floats and strings are parsed).
"""

from __future__ import annotations

import ast
import json

import ml_collections


def parse_variant(arg: str | None) -> dict:
    """'pixel,size=S,lr=1e-4' -> {'pixel': True, 'size': 'S', 'lr': 0.0001}."""
    out: dict = {}
    for part in filter(None, (arg or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            out[key.strip()] = True
            continue
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def rule_snr_scale(stats: str, low_freqs: int) -> float:
    """The SNR scale c of the variance-matching rule for `low_freqs`, read from a statistics JSON
    written by `launch/dct_stats.py --choices` (its m* table has c for every L): the c that gives
    the DCT tokens, averaged over dimensions, the SNR the pixel model has at c = 1."""
    with open(stats) as f:
        choices = json.load(f).get("choices")
    if choices is None:
        raise ValueError(
            f"{stats} has no 'choices': rewrite it with `python launch/dct_stats.py ... --choices` "
            "to get the variance-matching snr_scale, or give a number."
        )
    for row in choices["table"]:
        if row["low_freqs"] == low_freqs and row.get("snr_scale"):
            return float(row["snr_scale"])
    raise ValueError(
        f"{stats}: its --choices table has no snr_scale for low_freqs={low_freqs}; rerun "
        f"dct_stats --choices with --choices_low_freqs including {low_freqs}."
    )


def dctdiff_config(
    *,
    name: str,
    dataset: str,
    resolution: int,
    block_size: int,
    low_freqs: int,
    stats: str,
    snr_scale: float | str,
    size: str,
    batch_size: int,
    lr: float,
    pixel_patch_size: int,
    num_classes: int = 0,
    total_steps: int = 500_000,
    seed: int = 1234,
    prepare_hint: str = "",
) -> ml_collections.ConfigDict:
    """The reference DCTdiff training setup (dctdiff.md sections 5 and 10). snr_scale: c, or
    'rule' for the variance-matching c of `stats` at `low_freqs` (`rule_snr_scale`)."""
    if snr_scale == "rule":
        snr_scale = rule_snr_scale(stats, low_freqs)
    c = ml_collections.ConfigDict()
    c.name = name
    c.family = "diffusion"  # dctjax.families: the VP diffusion family
    c.seed = seed

    c.dataset = dict(
        name=dataset,
        split="train",
        data_dir=None,
        num_classes=num_classes,
        prepare_hint=prepare_hint,
        num_examples=None,  # synthetic only
    )
    c.resolution = resolution
    c.representation = "dct_tokens"
    c.representation_kwargs = dict(block_size=block_size, low_freqs=low_freqs, stats=stats)

    c.model = "uvit"
    # attention: 'auto' = cuDNN flash attention on NVIDIA GPUs with bf16, XLA elsewhere
    c.model_kwargs = dict(size=size, num_classes=num_classes, attention="auto")
    c.pixel_patch_size = pixel_patch_size
    c.dtype = "float32"  # 'bfloat16': bf16 compute, float32 parameters and optimiser state

    # FID during training (spec §10): from step 50k, every 25k steps, 10k samples with the config's
    # sampler on the EMA weights, and the best-FID checkpoint is kept. Active once `reference` names
    # statistics from `python launch/evaluate.py --compute_ref --config=THIS_CONFIG --out=ref.npz`.
    c.eval = dict(
        every=25_000,
        start=50_000,
        num_samples=10_000,
        batch_size=128,
        sampler=None,  # None: c.sample.sampler
        nfe=None,  # None: c.sample.nfe
        reference=None,
        inception_weights=None,  # None: download to the cache; or a .pth / converted .npz path
        jpeg_quality=None,  # 95 mimics the reference's JPEG samples (spec §11)
    )
    c.label_dropout = 0.0  # > 0 (e.g. 0.1) trains a DiT with a null class for CFG sampling
    c.diffusion = dict(
        beta_min=0.1,
        beta_max=20.0,
        snr_scale=snr_scale,
        prediction="eps",
        loss_weighting="representation",  # the representation's weights (EBFR); or 'inverse_variance'
    )

    c.batch_size = batch_size
    c.total_steps = total_steps
    c.optim = dict(
        lr=lr,
        b1=0.99,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.03,
        wd_exclude_1d=False,  # the reference decays every parameter
        warmup_steps=5000,
        grad_clip_norm=None,
    )
    c.ema_decay = 0.9999

    c.mesh = dict(data=-1, fsdp=1, param_strategy="replicate")
    c.input = dict(worker_count=2, random_flip=True)

    c.log_every = 100
    c.checkpoint_every = 25_000
    c.keep_checkpoints = 3
    c.sample_every = 25_000
    c.sample = dict(sampler="dpm_solver", nfe=50, num=64)  # the reference: DPM-Solver, 50 NFE
    c.sample.guidance = ml_collections.config_dict.placeholder(float)  # CFG scale (label_dropout)
    c.init_from = None
    return c


def apply_fields(
    c: ml_collections.ConfigDict, v: dict, arg: str | None
) -> ml_collections.ConfigDict:
    """The variant's `size=...` (the model size) and top-level `key=value` fields, the last step
    of every config family's variant parser."""
    if "size" in v:
        c.model_kwargs.size = v.pop("size")
    for key, value in v.items():
        if key not in c:
            raise ValueError(f"unknown config field {key!r} in the variant string {arg!r}.")
        c[key] = value
    return c


def apply_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies `pixel`, `runlocal` and key=value overrides (see the module docstring)."""
    v = parse_variant(arg)
    if v.pop("pixel", False):
        c.name = c.name.replace("dctdiff", "uvit_pixel")
        c.representation = "pixels"
        c.representation_kwargs = {}
        c.model = "uvit_pixel"
        c.model_kwargs.patch_size = c.pixel_patch_size
        c.diffusion.snr_scale = 1.0  # the U-ViT baselines' plain VP-SDE (SNR scaling is DCTdiff's)
    if "latents" in v:  # DCTdiff's "UViT (latent)" baseline on a frozen autoencoder's latents
        c.name = c.name.replace("dctdiff", "uvit_latent")
        c.representation = "latents"
        c.representation_kwargs = dict(autoencoder=str(v.pop("latents")))
        c.model = "uvit_pixel"
        c.model_kwargs.patch_size = int(v.pop("latent_patch", 2))
        c.diffusion.snr_scale = 1.0  # standardised latents
        if c.diffusion.loss_weighting == "representation":
            c.diffusion.loss_weighting = "inverse_variance"  # unit weights: unit-variance latents
    if v.pop("runlocal", False):
        c.model_kwargs.size = "T"
        c.batch_size = 8
        c.total_steps = 20
        c.optim.warmup_steps = 5
        c.log_every = 5
        c.checkpoint_every = 10
        c.sample_every = 20
        c.sample.num = 4
        c.sample.nfe = 5
        c.input.worker_count = 0
        c.eval.every = 0
    return apply_fields(c, v, arg)


def jit_config(
    *,
    name: str,
    dataset: str,
    resolution: int,
    size: str,
    patch_size: int,
    num_classes: int,
    batch_size: int,
    noise_scale: float,
    total_epochs: float | None = 600,
    num_examples: int = 1_281_167,
    guidance: float | None = 2.9,
    spectral_forcing: bool = True,
    seed: int = 0,
    prepare_hint: str = "",
) -> ml_collections.ConfigDict:
    """JiT + Spectral Forcing (spec spectral.md §2-§3): the `flow` family on pixels.

    The reference launcher: 600 epochs, lr = blr * batch / 256 with blr 5e-5, 5 warm-up epochs
    then constant, AdamW (0.9, 0.95) without weight decay, EMAs 0.9999 (sampled) and 0.9996,
    logit-normal t (-0.8, 0.8), x-prediction with the v-loss, label dropout 0.1, Heun with 50 steps
    (99 NFE) and CFG on velocities in the interval (0.1, 1.0).
    """
    c = ml_collections.ConfigDict()
    c.name = name
    c.family = "flow"
    c.seed = seed
    c.dataset = dict(
        name=dataset, split="train", data_dir=None, num_classes=num_classes,
        prepare_hint=prepare_hint, num_examples=None,
    )  # fmt: skip
    c.resolution = resolution
    c.representation = "pixels"
    c.representation_kwargs = {}
    c.model = "jit"
    c.model_kwargs = dict(size=size, patch_size=patch_size, attention="auto")
    c.dtype = "float32"  # 'bfloat16': the reference trains under bf16 autocast
    c.flow = dict(
        noise_scale=noise_scale, t_eps=0.05, p_mean=-0.8, p_std=0.8, pred_param="x",
        spectral_forcing=dict(
            enabled=spectral_forcing, schedule="linear", window_size=None, fixed_scale=None,
            kappa=30.0, c_min=0.05, c_max=1.0, k0=None, alpha=2.0,
        ),
    )  # fmt: skip
    c.label_dropout = 0.1 if num_classes else 0.0

    c.batch_size = batch_size
    c.total_steps = None
    c.total_epochs = total_epochs
    steps_per_epoch = max(num_examples // batch_size, 1)
    c.optim = dict(
        lr=None, blr=5e-5, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0,
        warmup_steps=5 * steps_per_epoch, grad_clip_norm=None,
    )  # fmt: skip
    c.ema_decay = [0.9999, 0.9996]  # the first is sampled (grids, sample.py, FID)

    c.mesh = dict(data=-1, fsdp=1, param_strategy="replicate")
    c.input = dict(worker_count=2, random_flip=True)
    c.log_every = 100
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 3
    c.sample_every = 10_000
    c.sample = dict(
        sampler="heun", nfe=99, num=64, guidance=guidance if num_classes else None,
        guidance_interval=(0.1, 1.0),
    )  # fmt: skip
    c.eval = dict(
        every=0, start=0, num_samples=50_000, batch_size=128, sampler=None, nfe=None,
        reference=None, inception_weights=None, jpeg_quality=None,
    )  # fmt: skip
    c.init_from = None
    return c


def apply_jit_variant(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """`sf` / `nosf` (Spectral Forcing on / off: vanilla JiT), `fixed` (the time-independent
    ablation, c fixed at 1), `window=N` (block DCT), `contour` (the §2.4 schedule; needs k0=...),
    `runlocal` (a seconds-long smoke run), `size=...`, `patch=...` and top-level key=value fields."""
    v = parse_variant(arg)
    sf = c.flow.spectral_forcing
    if v.pop("sf", False):
        sf.enabled = True
    if v.pop("nosf", False):
        sf.enabled = False
        c.name = c.name.replace("_sf", "")
    if v.pop("fixed", False):
        sf.fixed_scale = 1.0
    if "window" in v:
        sf.window_size = int(v.pop("window"))
    if v.pop("contour", False):
        sf.schedule = "contour"
    if "k0" in v:
        sf.k0 = float(v.pop("k0"))
    if v.pop("runlocal", False):
        c.model_kwargs.size = "T"
        c.batch_size = 8
        c.total_epochs = None
        c.total_steps = 20
        c.optim.warmup_steps = 5
        c.log_every = 5
        c.checkpoint_every = 10
        c.sample_every = 20
        c.sample.update(num=4, nfe=5)
        c.input.worker_count = 0
        c.eval.every = 0
    if "patch" in v:
        c.model_kwargs.patch_size = int(v.pop("patch"))
    return apply_fields(c, v, arg)


# [003] Table 3, by dataset: resolution, B, quality, clip, model size, batch, dropout, tokens.
DCTRANSFORMER_TABLE3 = {
    "lsun": dict(resolution=384, block_size=8, quality=75, clip=1200, batch_size=512, dropout=0.1, tokens=300e9),
    "ffhq": dict(resolution=1024, block_size=16, quality=35, clip=3200, batch_size=448, dropout=0.1, tokens=250e9),
    "imagenet": dict(resolution=384, block_size=8, quality=75, clip=1200, batch_size=512, dropout=0.01, tokens=1000e9),
    "openimages": dict(resolution=640, block_size=8, quality=50, clip=1200, batch_size=512, dropout=0.01, tokens=1000e9),
    "plant_leaves": dict(resolution=2048, block_size=32, quality=50, clip=4000, batch_size=256, dropout=0.4, tokens=100e9),
    "retinopathy": dict(resolution=1024, block_size=16, quality=75, clip=3200, batch_size=512, dropout=0.1, tokens=200e9),
    "clevr": dict(resolution=480, block_size=8, quality=90, clip=1200, batch_size=128, dropout=0.5, tokens=50e9),
}  # fmt: skip


def dctransformer_config(
    *,
    name: str,
    dataset: str,
    column: str,
    num_classes: int = 0,
    max_length: int | None = None,
    colorization: bool = False,
    seed: int = 0,
    prepare_hint: str = "",
    **table_overrides,
) -> ml_collections.ConfigDict:
    """The DCTransformer (the `autoregressive` family, spec dctransformer.md §7) for one column of
    [003] Table 3: codec (B, quality, clip), model size (hidden, heads, layer specs, DCT-image
    downsampling), batch, dropout and tokens processed; chunks of 896 targets with 128 overlap,
    Adam (0.9, 0.999) with a 1,000-step warm-up to 5e-4 then cosine decay to 0, gradient clip 1.0,
    no EMA. `max_length` is L_max of the length filtering: the 95th percentile of the training
    lengths L' printed by `python launch/dct_stats.py --config=...` (None: no filtering)."""
    t = {**DCTRANSFORMER_TABLE3[column], **table_overrides}
    c = ml_collections.ConfigDict()
    c.name = name
    c.family = "autoregressive"
    c.seed = seed
    c.dataset = dict(
        name=dataset, split="train", data_dir=None, num_classes=num_classes,
        prepare_hint=prepare_hint, num_examples=None,
    )  # fmt: skip
    c.resolution = t["resolution"]
    c.representation = "sparse_dct"
    c.representation_kwargs = dict(
        block_size=t["block_size"], quality=t["quality"], clip=t["clip"],
        order="luma_first" if colorization else "interleaved", chunk_size=896, overlap=128,
        max_length=None if colorization else max_length, p_min=0.1, colorization=colorization,
        max_len=None,
    )  # fmt: skip
    c.model = "dctransformer"
    c.model_kwargs = dict(size=column, dropout=t["dropout"], input_scaling="log", remat=False)
    c.dtype = "float32"
    c.batch_size = t["batch_size"]
    c.total_tokens = t["tokens"]
    c.optim = dict(
        lr=5e-4, warmup_steps=1000, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
        grad_clip_norm=1.0, lr_decay="cosine", decay_steps=None,
    )  # fmt: skip
    c.ema_decay = 0.0  # no EMA ([003] has none): the sampled weights are the trained ones
    c.autoregressive = dict(log_chunks=4)
    c.mesh = dict(data=-1, fsdp=1, param_strategy="replicate")
    c.input = dict(worker_count=8, random_flip=True)
    c.log_every = 100
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    c.sample_every = 10_000  # a grid of sample.num samples (chunked, KV-cached sampling)
    # spec §5: temperature 1, no top-k / nucleus truncation, validity masks on, at most
    # ceil(L_max / N_c) + 2 chunks (None); task 'upsample' / 'colorize' with context images
    c.sample = dict(
        num=16, temperature=1.0, top_k=0, top_p=1.0, masks=True, max_chunks=None, task=None
    )
    c.eval = dict(every=10_000, start=0, split="validation", num_images=256, batch_size=64)
    c.init_from = None
    return c


def apply_dctransformer_variant(
    c: ml_collections.ConfigDict, arg: str | None
) -> ml_collections.ConfigDict:
    """`runlocal` (a seconds-long smoke run: tiny model, short chunks, few steps), `size=...`
    (a `DCTRANSFORMER_SIZES` key) and top-level key=value fields."""
    v = parse_variant(arg)
    if v.pop("runlocal", False):
        c.resolution = 32 if c.representation_kwargs.block_size <= 16 else 64
        c.representation_kwargs.update(block_size=min(c.representation_kwargs.block_size, 8))
        c.representation_kwargs.update(clip=255, chunk_size=48, overlap=16, max_length=None)
        c.model_kwargs.update(size="T", downsample=(2, 1))
        c.batch_size = 8
        c.total_tokens = None
        c.total_steps = 20
        c.optim.warmup_steps = 5
        c.log_every = 5
        c.checkpoint_every = 10
        c.input.worker_count = 0
        c.eval.update(every=0)
        c.sample_every = 20
        c.sample.update(num=4, max_chunks=3)
        c.dataset.update(name="synthetic", num_examples=64, data_dir=None)
        if c.dataset.num_classes:
            c.dataset.num_classes = 4
    return apply_fields(c, v, arg)


# Spectrum Matching's autoencoders (spec spectral.md §4.2-§4.4): the three recipes of [SM-code].
AUTOENCODER_RECIPES = {
    # SD-VAE: L1 + 0.5 LPIPS + GAN (from step 50,001) + KL 1e-6
    "sdvae": dict(kl_weight=1e-6, esm=dict(weight=0.0), dsm=dict(enabled=False)),
    # ESM-AE (branch SDVAE_and_ESM): the KL replaced by the ESM loss, weight 0.01, delta 1
    "esm": dict(kl_weight=0.0, esm=dict(weight=0.01), dsm=dict(enabled=False)),
    # DSM (branch DSM): shared anti-diagonal masking of image and latent, k ~ U{0, 8, 10, 12}
    "dsm": dict(kl_weight=1e-6, esm=dict(weight=0.0), dsm=dict(enabled=True)),
    # a plain autoencoder: reconstruction (+ LPIPS/GAN) only
    "plain": dict(kl_weight=0.0, esm=dict(weight=0.0), dsm=dict(enabled=False)),
}


def autoencoder_config(
    *,
    name: str,
    dataset: str,
    resolution: int,
    size: str,
    batch_size: int,
    total_steps: int,
    recipe: str = "sdvae",
    seed: int = 0,
    prepare_hint: str = "",
) -> ml_collections.ConfigDict:
    """An SD-VAE-style autoencoder (the `autoencoder` family) with one of AUTOENCODER_RECIPES:
    AdamW lr 5e-5, betas (0.9, 0.999), weight decay 0.005, gradient clip 1.0, no warm-up, the
    same optimiser for the PatchGAN discriminator, no EMA (spec §4.2)."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.family = "autoencoder"
    c.seed = seed
    c.dataset = dict(
        name=dataset, split="train", data_dir=None, num_classes=0,
        prepare_hint=prepare_hint, num_examples=None,
    )  # fmt: skip
    c.resolution = resolution
    c.representation = "pixels"
    c.representation_kwargs = {}
    c.model = "autoencoder"
    c.model_kwargs = dict(size=size)
    c.dtype = "float32"
    c.autoencoder = dict(
        l1_weight=1.0, lpips_weight=0.5, lpips_weights=None, kl_weight=1e-6,
        esm=dict(weight=0.0, delta=1.0, num_bins=16),
        dsm=dict(enabled=False, ks=(0, 8, 10, 12), block_size=8),
        gan=dict(enabled=True, weight=0.5, start=50_001, loss="hinge", ndf=64, n_layers=3,
                 optim=None),
    )  # fmt: skip
    set_autoencoder_recipe(c, recipe)
    c.batch_size = batch_size
    c.total_steps = total_steps
    c.optim = dict(
        lr=5e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.005, warmup_steps=0,
        grad_clip_norm=1.0,
    )  # fmt: skip
    c.ema_decay = 0.0  # no EMA: the sampled (encoded/decoded) weights are the trained ones
    c.mesh = dict(data=-1, fsdp=1, param_strategy="replicate")
    c.input = dict(worker_count=2, random_flip=True)
    c.log_every = 100
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 3
    c.sample_every = 0  # no prior-sample grids; reconstruction metrics below
    c.sample = dict(num=16, task=None)
    # held-out reconstruction metrics (PSNR, L1, latent std and PSD slope)
    c.eval = dict(every=10_000, start=0, split="test", num_images=256, batch_size=32)
    c.init_from = None
    return c


def set_autoencoder_recipe(c: ml_collections.ConfigDict, recipe: str) -> None:
    if recipe not in AUTOENCODER_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {sorted(AUTOENCODER_RECIPES)}.")
    r = AUTOENCODER_RECIPES[recipe]
    c.autoencoder.kl_weight = r["kl_weight"]
    c.autoencoder.esm.weight = r["esm"]["weight"]
    c.autoencoder.dsm.enabled = r["dsm"]["enabled"]
    c.recipe = recipe


def apply_autoencoder_variant(
    c: ml_collections.ConfigDict, arg: str | None
) -> ml_collections.ConfigDict:
    """Variants: a recipe name (`sdvae`, `esm`, `dsm`, `plain`), `gan` / `nogan`, `nolpips`,
    `runlocal` (a seconds-long smoke run), `size=...` and top-level key=value fields."""
    v = parse_variant(arg)
    for recipe in AUTOENCODER_RECIPES:
        if v.pop(recipe, False):
            set_autoencoder_recipe(c, recipe)
    if v.pop("gan", False):
        c.autoencoder.gan.enabled = True
    if v.pop("nogan", False):
        c.autoencoder.gan.enabled = False
    if v.pop("nolpips", False):
        c.autoencoder.lpips_weight = 0.0
    if v.pop("runlocal", False):
        c.model_kwargs = dict(size="T")
        c.resolution = 32
        c.dataset.name = "synthetic"
        c.dataset.num_examples = 512
        c.autoencoder.lpips_weight = 0.0
        c.autoencoder.gan.update(ndf=8, n_layers=2, start=10)
        c.batch_size = 8
        c.total_steps = 20
        c.log_every = 5
        c.checkpoint_every = 10
        c.input.worker_count = 0
        c.eval.update(every=0, num_images=16, batch_size=8)
    return apply_fields(c, v, arg)
