"""Train (or fine-tune) one diffusion generator of a pipeline on media + captions: ``anygen train --stage generator``.

The standard recipe of the diffusers training scripts, on the generator's own components:

1. ``vae_steps`` > 0: the autoencoder (``AutoencoderKL``) on the media (images; video frame by frame; audio as the
   log-mel spectrogram AudioLDM decodes), reconstruction (L1 + MSE) plus a small KL term; then the VAE's
   ``scaling_factor`` is set to 1 / std of the latents, as Stable Diffusion's was chosen.
2. ``vocoder_steps`` > 0 (audio): the ``SpeechT5HifiGan`` vocoder from the true log-mel to the waveform, with a
   multi-resolution STFT loss (spectral convergence + log magnitude).
3. ``text_steps`` > 0: the text encoder alone, contrastively (CLIP/CLAP's InfoNCE) against a linear map of each
   medium's VAE latent, so that different captions condition differently before the denoiser learns to read them
   (a text encoder trained from scratch through the denoising loss alone can collapse: AudioLDM's pooled, normalised
   CLAP embedding of every caption starts within cosine 0.999 of the others). Captions that are equal count as
   positives of each other.
4. ``max_steps``: the denoiser (``UNet2DConditionModel`` / ``UNet3DConditionModel``) and, unless frozen, the text
   encoder, with the noise-prediction objective (the scheduler's ``prediction_type``, optional min-SNR weighting)
   and caption dropout (the empty prompt, so classifier-free guidance works).

Data: a JSON list of ``{"media": path relative to the file, "caption": str}``. The result is the whole pipeline
with this generator replaced, written to ``out`` (``AnyToAnyPipeline.from_pretrained(out)``), plus
``out/metrics.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from anygen.errors import AnyGenError
from anygen.train.config import MAX_SEED, ComponentConfig, ConfigError


class GeneratorTrainConfig(ComponentConfig):
    """One generator training run; errors name the field (numbers finite, seed in 0..2**32-1)."""

    what: ClassVar[str] = "generator"

    modality: Literal["image", "video", "audio"]
    pipeline: str = Field("tiny", description="bundled name, spec .yaml or saved folder")
    data: str = Field(description='JSON list of {"media": path, "caption": str}')
    out: str
    max_steps: int = Field(1000, ge=0, description="denoiser (+ text encoder) steps")
    vae_steps: int = Field(0, ge=0, description="autoencoder steps first (0: keep the VAE as it is)")
    vocoder_steps: int = Field(0, ge=0, description="vocoder steps (audio only)")
    text_steps: int = Field(0, ge=0, description="contrastive text-encoder steps against the media latents")
    batch_size: int = Field(32, ge=1)
    vae_batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    text_encoder_lr: float | None = Field(None, gt=0, description="the text encoder's rate (None: lr)")
    vae_lr: float = Field(1e-3, gt=0)
    vocoder_lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-6, ge=0)
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="fraction of captions replaced by ''")
    train_text_encoder: bool = True
    init_from: Literal["image", "video", "audio"] | None = Field(
        None,
        description="start from the pipeline's generator of this modality where the weights fit (VAE, text encoder, "
        "the UNet's spatial layers): an image model inflated to video, as ModelScope/Zeroscope were made",
    )
    snr_gamma: float | None = Field(5.0, gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    log_every: int = Field(10, ge=1)
    progress: bool = True
    verbose: bool = True


def read_manifest(path: str | Path) -> tuple[list[Path], list[str]]:
    """Media paths and captions of a generator manifest, checked (missing files are named)."""
    from anygen.train.data import DataError

    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"generator data {path}: cannot read it as JSON ({err})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f'generator data {path}: expected a non-empty JSON list of {{"media", "caption"}}')
    media, captions = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str) or "media" not in entry:
            raise DataError(f'generator data {path} entry {i}: expected {{"media": path, "caption": str}}')
        file = path.parent / str(entry["media"])
        if not file.is_file():
            raise DataError(f"generator data {path} entry {i}: media file {file} does not exist")
        media.append(file)
        captions.append(entry["caption"])
    return media, captions


def _load_media(modality: str, files: list[Path]) -> list:
    from anygen.media import Audio, Video, load_image

    if modality == "image":
        return [load_image(str(f)) for f in files]
    if modality == "video":
        return [Video.load(str(f)) for f in files]
    return [Audio.load(str(f)) for f in files]


def _batches(n: int, size: int, rng: np.random.Generator):
    """Endless index batches: shuffled epochs, each item once per epoch."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - size + 1 if n >= size else 1, size):
            yield order[start : start + size]


def train_generator(config: GeneratorTrainConfig | dict[str, Any] | None = None, /, **overrides: Any) -> Path:
    """Run :class:`GeneratorTrainConfig`; returns the output folder (a saved pipeline)."""
    from anygen.pipeline import AnyToAnyPipeline
    from anygen.train.diffusion import DiffusionLoss

    cfg = GeneratorTrainConfig.of(config, **overrides)
    say = print if cfg.verbose else (lambda *a, **k: None)
    out, metrics = cfg.start_run()

    files, captions = read_manifest(cfg.data)
    pipe = AnyToAnyPipeline.from_pretrained(cfg.pipeline)
    pipe.set_progress_bar_config(disable=True)
    if cfg.modality not in pipe.output_modalities:
        raise AnyGenError(f"pipeline {pipe.spec.name!r} has no {cfg.modality} generator to train")
    gen = pipe.generator(cfg.modality)
    components = gen.pipeline
    if cfg.vocoder_steps and cfg.modality != "audio":
        raise ConfigError("generator train config: vocoder_steps: only an audio generator has a vocoder")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    media = _load_media(cfg.modality, files)
    say(
        f"generator data: {len(media)} {cfg.modality} items, {len(set(captions))} distinct captions ({cfg.data})"
    )

    if cfg.init_from:
        if cfg.init_from == cfg.modality or cfg.init_from not in pipe.output_modalities:
            raise ConfigError(
                f"generator train config: init_from: {cfg.init_from!r} must be another output of the pipeline "
                f"(it has {sorted(pipe.output_modalities)})"
            )
        copied = init_from_generator(components, pipe.generator(cfg.init_from).pipeline)
        say(
            f"initialised from the {cfg.init_from} generator: "
            + ", ".join(f"{k} {v}" for k, v in copied.items())
        )
    loss_fn = DiffusionLoss(gen, cfg.snr_gamma)
    inputs = loss_fn._vae_inputs(media)  # per item: images [1,3,H,W], video [F,3,H,W], audio [1,1,T,mels]
    for module in components.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()

    if cfg.vae_steps:
        _train_vae(components.vae, torch.cat(inputs), cfg, rng, metrics)
    if cfg.vocoder_steps:
        _train_vocoder(components.vocoder, inputs, media, cfg, rng, metrics)
    means, stds = _latent_stats(components.vae, inputs)
    if cfg.vae_steps:
        scale = float(1.0 / torch.cat([m.flatten() for m in means]).std())
        components.vae.register_to_config(scaling_factor=scale)
        say(f"vae scaling_factor set to {scale:.4f} (1 / std of the latents)")
    if cfg.text_steps:
        _train_text_encoder(gen, means, captions, cfg, rng, metrics)
    if cfg.max_steps:
        _train_denoiser(gen, loss_fn, means, stds, captions, cfg, rng, metrics)
    for module in components.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    gen._empty_cache.clear()
    pipe.save_pretrained(out)
    say(f"saved the pipeline with the trained {cfg.modality} generator to {out}")
    return out


@torch.no_grad()
def init_from_generator(target, source) -> dict[str, str]:
    """Copy into ``target``'s VAE, text encoder and UNet every tensor of ``source``'s with the same name and shape
    (a UNet3D's spatial layers are named as a UNet2D's; its temporal layers start as the identity). Returns, per
    component, how many of its tensors were copied."""
    copied = {}
    for name in ("vae", "text_encoder", "unet"):
        dst, src = getattr(target, name), getattr(source, name)
        mine, theirs = dst.state_dict(), src.state_dict()
        fit = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
        if fit:
            dst.load_state_dict(fit, strict=False)
        copied[name] = f"{len(fit)}/{len(mine)}"
        if name == "vae" and len(fit) == len(mine):
            dst.register_to_config(scaling_factor=src.config.scaling_factor)
    return copied


# ---------------------------------------------------------------------------------------------------------------
# 1. The autoencoder


def _train_vae(vae, data: torch.Tensor, cfg: GeneratorTrainConfig, rng, metrics: Path) -> None:
    from anygen.train.simple import optimise

    vae.requires_grad_(True).train()
    batches = _batches(data.shape[0], cfg.vae_batch_size, rng)

    def step(_: int) -> dict[str, torch.Tensor]:
        x = data[next(batches)]
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = dist.kl().mean() / x[0].numel()
        return {"loss": rec + cfg.kl_weight * kl, "recon": rec.detach(), "kl": kl.detach()}

    optimise(
        vae.parameters(),
        step,
        steps=cfg.vae_steps,
        lr=cfg.vae_lr,
        name="vae",
        metrics=metrics,
        log_every=cfg.log_every,
        progress=cfg.progress,
    )
    vae.requires_grad_(False).eval()


@torch.no_grad()
def _latent_stats(vae, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The VAE posterior (mean, std) of every item, unscaled."""
    means, stds = [], []
    sizes = [x.shape[0] for x in inputs]
    data = torch.cat(inputs)
    chunk_means, chunk_stds = [], []
    for start in range(0, data.shape[0], 256):
        dist = vae.encode(data[start : start + 256].to(vae.device, vae.dtype)).latent_dist
        chunk_means.append(dist.mean)
        chunk_stds.append(dist.std)
    means = list(torch.cat(chunk_means).split(sizes))
    stds = list(torch.cat(chunk_stds).split(sizes))
    return means, stds


# ---------------------------------------------------------------------------------------------------------------
# 2. The vocoder


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + L1 of linear magnitudes, at three resolutions.

    Linear, not log, magnitudes: an exactly silent target (a pause between beeps) has no finite log, and with a
    floored log the quiet bins outweigh the tone (measured: a 64-channel HiFi-GAN stayed near-silent)."""
    total = pred.new_zeros(())
    for n_fft, hop in ((256, 64), (512, 128), (1024, 256)):
        window = torch.hann_window(n_fft, device=pred.device)
        p = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs()
        t = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs()
        total = total + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
        total = total + F.l1_loss(p, t)
    return total / 3


def _train_vocoder(vocoder, inputs, media, cfg: GeneratorTrainConfig, rng, metrics: Path) -> None:
    from anygen.train.simple import optimise

    rate = int(vocoder.config.sampling_rate)
    hop = int(np.prod(vocoder.config.upsample_rates))
    mels = torch.cat([x[:, 0] for x in inputs])  # [N, T, mels]
    frames = mels.shape[1]
    waves = torch.zeros(len(media), frames * hop)
    for i, audio in enumerate(media):
        w = torch.from_numpy(audio.resample(rate).waveform.astype(np.float32))[: frames * hop]
        waves[i, : w.numel()] = w
    crop = min(frames, 32)
    vocoder.requires_grad_(True).train()
    batches = _batches(len(media), min(cfg.vae_batch_size, len(media)), rng)

    def step(_: int) -> dict[str, torch.Tensor]:
        idx = next(batches)
        starts = rng.integers(0, frames - crop + 1, size=len(idx))
        mel = torch.stack([mels[i, s : s + crop] for i, s in zip(idx, starts, strict=True)])
        target = torch.stack([waves[i, s * hop : (s + crop) * hop] for i, s in zip(idx, starts, strict=True)])
        pred = vocoder(mel)
        return {"loss": stft_loss(pred, target)}

    optimise(
        vocoder.parameters(),
        step,
        steps=cfg.vocoder_steps,
        lr=cfg.vocoder_lr,
        name="vocoder",
        metrics=metrics,
        log_every=cfg.log_every,
        progress=cfg.progress,
    )
    vocoder.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------------------------
# 3. The text encoder, contrastively


def _train_text_encoder(
    gen, means, captions: list[str], cfg: GeneratorTrainConfig, rng, metrics: Path
) -> None:
    from anygen.train.simple import optimise

    text_encoder = gen.pipeline.text_encoder
    text_encoder.requires_grad_(True).train()
    latents = torch.stack([m.flatten() for m in means])
    latents = (latents - latents.mean(0)) / (latents.std(0) + 1e-6)
    width = gen.condition_shape[1]
    media_map = torch.nn.Linear(latents.shape[1], width)
    log_temperature = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([ids[c] for c in captions])
    batches = _batches(len(captions), min(cfg.batch_size, len(captions)), rng)

    def step(k: int) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(next(batches))
        text = F.normalize(gen._encode([captions[i] for i in idx], text_encoder.device).mean(dim=1), dim=-1)
        media = F.normalize(media_map(latents[idx]), dim=-1)
        logits = text @ media.T * log_temperature.exp().clamp(max=100)
        same = (caption_ids[idx][:, None] == caption_ids[idx][None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        return {"loss": loss}

    params = [*text_encoder.parameters(), *media_map.parameters(), log_temperature]
    optimise(
        params,
        step,
        steps=cfg.text_steps,
        lr=cfg.text_encoder_lr or cfg.lr,
        name="text encoder",
        metrics=metrics,
        log_every=cfg.log_every,
        progress=cfg.progress,
    )
    text_encoder.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------------------------
# 4. The denoiser (+ text encoder)


def _train_denoiser(
    gen, loss_fn, means, stds, captions, cfg: GeneratorTrainConfig, rng, metrics: Path
) -> None:
    from anygen.train.simple import optimise

    components = gen.pipeline
    unet, vae, text_encoder = components.unet, components.vae, components.text_encoder
    unet.requires_grad_(True).train()
    params = [{"params": list(unet.parameters())}]
    if cfg.train_text_encoder:
        text_encoder.requires_grad_(True).train()
        params.append({"params": list(text_encoder.parameters()), "lr": cfg.text_encoder_lr or cfg.lr})
    scale = float(vae.config.scaling_factor)
    video = gen.type_name == "zeroscope"
    batches = _batches(len(captions), min(cfg.batch_size, len(captions)), rng)

    def step(k: int) -> dict[str, torch.Tensor]:
        idx = next(batches)
        generators = [
            torch.Generator().manual_seed(int(cfg.seed * 1_000_003 + k * 4099 + j)) for j in range(len(idx))
        ]
        lat = []
        for i, g in zip(idx, generators, strict=True):
            eps = torch.randn(means[i].shape, generator=g)
            lat.append((means[i] + stds[i] * eps) * scale)
        latents = (
            torch.stack(lat).permute(0, 2, 1, 3, 4) if video else torch.cat(lat)
        )  # video: [B, C, F, h, w]
        drop = rng.random(len(idx)) < cfg.caption_dropout
        texts = ["" if d else captions[i] for i, d in zip(idx, drop, strict=True)]
        with torch.set_grad_enabled(cfg.train_text_encoder):
            cond = gen._encode(texts, unet.device)
        loss = loss_fn.loss_on_latents(latents.contiguous(), cond, generators).mean()
        return {"loss": loss}

    optimise(
        params,
        step,
        steps=cfg.max_steps,
        lr=cfg.lr,
        name=f"{cfg.modality} denoiser",
        metrics=metrics,
        log_every=cfg.log_every,
        progress=cfg.progress,
    )
    unet.requires_grad_(False).eval()
    text_encoder.requires_grad_(False).eval()
