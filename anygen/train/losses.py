"""Training losses: LM loss on labelled tokens, the alignment loss of the output projectors, and the diffusion
loss's target and min-SNR weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def lm_loss_per_example(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy averaged over each row's labelled tokens: ``([B], valid [B] bool)``.

    Rows are averaged separately (then over rows), so a batch split across processes gives the same loss as
    one process holding it all.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tokens = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shift_labels.shape)
    mask = shift_labels != IGNORE
    counts = mask.sum(dim=1)
    per_row = (tokens * mask).sum(dim=1) / counts.clamp(min=1)
    return per_row, counts > 0


def alignment_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Per-item loss ``[n]`` between projector outputs and caption embeddings ``[n, tokens, width]``.

    ``l2`` (NExT-GPT's ``l2_loss(...).mean()``): the Euclidean norm of each token's error, averaged over tokens.
    ``mse``: the squared error averaged over tokens and width.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"alignment loss: projector output {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    diff = pred.float() - target.float()
    if kind == "l2":
        return torch.linalg.vector_norm(diff, dim=-1).mean(dim=-1)
    if kind == "mse":
        return diff.pow(2).mean(dim=(-1, -2))
    raise ValueError(f"unknown alignment loss {kind!r} (use 'l2' or 'mse')")


def diffusion_target(
    scheduler, prediction_type: str, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon), the velocity (v_prediction) or the clean latents."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "sample":
        return latents
    raise ValueError(f"unknown scheduler prediction_type {prediction_type!r}")


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at each timestep."""
    alphas = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return alphas / (1 - alphas)


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al., 2023) for a loss on ``prediction_type``'s target."""
    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=gamma)
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1)
    return clipped
