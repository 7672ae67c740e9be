"""The optional diffusion loss: the frozen UNet's denoising loss on the target media, conditioned on the output
projector's result (gradients reach the projector through the frozen UNet).

The media are encoded by the generator's frozen VAE (images; video frame by frame; audio as AudioLDM's log-mel
spectrogram), noised by a DDPM scheduler with the generator's own training settings, and the UNet's prediction
is compared with the target its scheduler's ``prediction_type`` names: the noise for ``epsilon``, the velocity
for ``v_prediction`` (SD-2, some Zeroscope checkpoints), the latents for ``sample``. Optional min-SNR weighting.
Noise and timesteps come from one seed per target, so a batch split across processes draws what one process
would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anygen.media import Audio, Video
from anygen.train.losses import diffusion_target, min_snr_weights


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover ``width x height`` (bicubic), then centre-crop."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def _pixels(images: Sequence[Image.Image], width: int, height: int) -> torch.Tensor:
    arrays = [np.asarray(_fit(im, width, height), dtype=np.float32) / 127.5 - 1.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def log_mel(audio: Audio, sample_rate: int, hop: int, n_mels: int, n_fft: int = 1024) -> torch.Tensor:
    """AudioLDM's input: log of the magnitude mel spectrogram (slaney mel, 0..sr/2 Hz), ``[frames, n_mels]``."""
    from transformers.audio_utils import mel_filter_bank

    wave = torch.from_numpy(audio.resample(sample_rate).waveform.astype(np.float32))
    pad = (n_fft - hop) // 2
    if wave.numel() < pad + 1:
        wave = F.pad(wave, (0, pad + 1 - wave.numel()))
    wave = F.pad(wave[None, None], (pad, pad), mode="reflect")[0, 0]
    spec = torch.stft(
        wave,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=False,
        return_complex=True,
    )
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=sample_rate / 2,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    mel = torch.from_numpy(bank.astype(np.float32)).T @ magnitude
    return torch.log(torch.clamp(mel, min=1e-5)).T


class DiffusionLoss:
    """Per-target denoising loss ``[n]`` for one output modality's generator."""

    def __init__(self, generator, snr_gamma: float | None = None, cache=None) -> None:
        from diffusers import DDPMScheduler

        self.generator = generator
        pipe = generator.pipeline
        self.kind = generator.type_name
        self.unet, self.vae = pipe.unet, pipe.vae
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.snr_gamma = snr_gamma
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.cache = cache  # (modality, path) -> the VAE's latent mean and std of that medium

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def _vae_inputs(self, values: Sequence) -> list[torch.Tensor]:
        """What the VAE encodes for each medium: images [1, 3, H, W], videos [F, 3, H, W], audio [1, 1, T, mels]."""
        sample = int(self.unet.config.sample_size) * self.vae_scale
        opts = self.generator.default_options()
        if self.kind == "stable-diffusion":
            width, height = opts.get("width") or sample, opts.get("height") or sample
            return list(_pixels(values, width, height)[:, None])
        if self.kind == "zeroscope":
            width, height = opts.get("width") or sample, opts.get("height") or sample
            frames = int(opts.get("num_frames") or 8)
            return [
                _pixels([Image.fromarray(f) for f in _as_video(v).sample_frames(frames)], width, height)
                for v in values
            ]
        if self.kind == "audioldm":
            vocoder = self.generator.pipeline.vocoder.config
            rate, hop, n_mels = (
                int(vocoder.sampling_rate),
                int(np.prod(vocoder.upsample_rates)),
                int(vocoder.model_in_dim),
            )
            out = []
            for a in values:
                mel = log_mel(_as_audio(a), rate, hop, n_mels)[:sample]
                if mel.shape[0] < sample:
                    mel = F.pad(mel, (0, 0, 0, sample - mel.shape[0]), value=float(np.log(1e-5)))
                out.append(mel[None, None])
            return out
        raise ValueError(f"no diffusion loss for generator type {self.kind!r}")

    @torch.no_grad()
    def latents(self, items: Sequence, generators: list[torch.Generator]) -> torch.Tensor:
        """Clean latents of the target media (frozen VAE, no gradients): one draw from each medium's latent
        distribution, with its own generator. ``items``: :class:`~anygen.train.sequences.MediaItem` or media."""
        dists: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        todo = []
        for i, item in enumerate(items):
            key, value = (getattr(item, "key", None), getattr(item, "value", item))
            if value is None:
                dists[i] = self.cache[key]
            else:
                todo.append((i, key, value))
        if todo:
            inputs = self._vae_inputs([v for _, _, v in todo])
            sizes = [x.shape[0] for x in inputs]
            dist = self.vae.encode(torch.cat(inputs).to(self.device, self.vae.dtype)).latent_dist
            means, stds = dist.mean.split(sizes), dist.std.split(sizes)
            for (i, key, _), mean, std in zip(todo, means, stds, strict=True):
                dists[i] = (mean, std)
                if self.cache is not None and key is not None:
                    self.cache.put(key, (mean, std))
        lat = []
        for i, g in enumerate(generators):
            mean, std = dists[i]
            eps = torch.randn(mean.shape, generator=g).to(mean.device, mean.dtype)
            lat.append((mean + std * eps) * self.vae.config.scaling_factor)
        if self.kind == "zeroscope":  # [B, C, F, h, w], as TextToVideoSDPipeline
            return torch.stack(lat).permute(0, 2, 1, 3, 4).contiguous()
        return torch.cat(lat)

    def __call__(self, conditioning: torch.Tensor, items: Sequence, seeds: Sequence[int]) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        return self.loss_on_latents(self.latents(items, generators), conditioning, generators)

    def loss_on_latents(
        self, latents: torch.Tensor, conditioning: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Per-item denoising loss ``[n]`` of clean (scaled) ``latents``, one generator per item for its timestep
        and noise. ``conditioning``: ``[n, tokens, width]`` (AudioLDM: ``[n, 1, width]``)."""
        n = latents.shape[0]
        steps = self.scheduler.config.num_train_timesteps
        timesteps = torch.cat([torch.randint(0, steps, (1,), generator=g) for g in generators]).to(
            self.device
        )
        noise = torch.cat([torch.randn((1, *latents.shape[1:]), generator=g) for g in generators]).to(
            latents.device, latents.dtype
        )
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = diffusion_target(self.scheduler, self.prediction_type, latents, noise, timesteps)
        cond = conditioning.to(self.device, self.unet.dtype)
        if self.kind == "audioldm":
            pred = self.unet(noisy, timesteps, encoder_hidden_states=None, class_labels=cond[:, 0]).sample
        else:
            pred = self.unet(noisy, timesteps, encoder_hidden_states=cond).sample
        loss = (pred.float() - target.float()).pow(2).reshape(n, -1).mean(dim=1)
        if self.snr_gamma is not None:
            loss = loss * min_snr_weights(self.scheduler, timesteps, self.snr_gamma, self.prediction_type)
        return loss


def _as_video(item) -> Video:
    if not isinstance(item, Video):
        raise TypeError(f"video diffusion loss: expected a Video, got {type(item).__name__}")
    return item


def _as_audio(item) -> Audio:
    if not isinstance(item, Audio):
        raise TypeError(f"audio diffusion loss: expected an Audio, got {type(item).__name__}")
    return item
