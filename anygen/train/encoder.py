"""ImageBind-style binding of an encoder's image, video and audio towers to text: ``anygen train --stage encoder``.

A small text tower (``CLIPTextModelWithProjection`` over bytes) is trained with the encoder, and every medium is
pulled towards the embedding of its caption by a symmetric InfoNCE loss (as CLIP and ImageBind), one modality per
batch. Items with the same caption are all positives of that caption. The encoder is trained in place and the
pipeline saved to ``out``; the text tower is written to ``out/text_tower`` (the pipeline itself does not use it).

Data: generator-style JSON lists of ``{"media": path, "caption": str}`` (the modality follows the file suffix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from anygen.errors import AnyGenError
from anygen.train.config import MAX_SEED, ComponentConfig, ConfigError


class EncoderTrainConfig(ComponentConfig):
    """One encoder-binding run; errors name the field (numbers finite, seed in 0..2**32-1)."""

    what: ClassVar[str] = "encoder"

    pipeline: str = "tiny"
    data: list[str] = Field(min_length=1, description='JSON lists of {"media": path, "caption": str}')
    out: str
    encoder: str | None = Field(None, description="the encoder node to train (default: the pipeline's first)")
    max_steps: int = Field(1500, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.07, gt=0, description="initial softmax temperature (learned)")
    text_width: int = Field(64, ge=8)
    text_layers: int = Field(2, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    log_every: int = Field(10, ge=1)
    progress: bool = True
    verbose: bool = True

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("data"), (str, Path)):
            data["data"] = [p for p in str(data["data"]).split(",") if p]
        return data


def _text_tower(width: int, layers: int, output_dim: int, max_length: int = 64):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from anygen.generators.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 16),
        max_position_embeddings=max_length,
        projection_dim=output_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config), tokenizer


def contrastive_loss(media: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor):
    """Symmetric InfoNCE between ``media [B, D]`` and the distinct captions' ``text [U, D]``; ``labels [B]`` gives
    each item's caption. A caption's positives are all items that have it."""
    logits = scale * F.normalize(media, dim=-1) @ F.normalize(text, dim=-1).T  # [B, U]
    media_to_text = F.cross_entropy(logits, labels)
    positive = F.one_hot(labels, text.shape[0]).bool()  # [B, U]
    cols = logits.T  # [U, B]
    text_to_media = (cols.logsumexp(dim=1) - cols.masked_fill(~positive.T, float("-inf")).logsumexp(dim=1)).mean()
    return (media_to_text + text_to_media) / 2


def train_encoder(config: EncoderTrainConfig | dict[str, Any] | None = None, /, **overrides: Any) -> Path:
    """Run :class:`EncoderTrainConfig`; returns the output folder (a saved pipeline)."""
    from anygen.media import Audio, Video, load_image
    from anygen.pipeline import AnyToAnyPipeline
    from anygen.train.data import _EXTENSIONS
    from anygen.train.generator import _batches, read_manifest
    from anygen.train.simple import optimise

    cfg = EncoderTrainConfig.of(config, **overrides)
    say = print if cfg.verbose else (lambda *a, **k: None)
    out, metrics = cfg.start_run()

    pipe = AnyToAnyPipeline.from_pretrained(cfg.pipeline)
    name = cfg.encoder or next(iter(pipe.spec.encoders))
    if name not in pipe.spec.encoders:
        raise ConfigError(f"encoder train config: encoder: pipeline has no encoder {name!r}")
    encoder = pipe.encoder(name)
    for needed in ("embed_pixels", "embed_audio_features"):
        if not hasattr(encoder, needed):
            raise AnyGenError(f"encoder {name!r} ({type(encoder).__name__}) cannot be trained here (no {needed})")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    items: dict[str, tuple[list, list[str]]] = {}
    for manifest in cfg.data:
        files, captions = read_manifest(manifest)
        for f, c in zip(files, captions, strict=True):
            modality = _EXTENSIONS.get(f.suffix.lower())
            if modality not in encoder.modalities:
                raise AnyGenError(f"{manifest}: {f.name} is not an input encoder {name!r} takes")
            items.setdefault(modality, ([], []))
            items[modality][0].append(f)
            items[modality][1].append(c)
    inputs: dict[str, torch.Tensor] = {}
    for modality, (files, captions) in items.items():
        if modality == "image":
            inputs[modality] = encoder.preprocess_images([load_image(str(f)) for f in files])
        elif modality == "video":
            inputs[modality] = encoder.video_clips([Video.load(str(f)) for f in files])
        else:
            clips = [c for f in files for c in encoder.audio_clips(Audio.load(str(f)))]
            inputs[modality] = encoder.preprocess_audio(clips)
        say(f"encoder data: {len(files)} {modality} items, {len(set(captions))} distinct captions")

    text_model, tokenizer = _text_tower(cfg.text_width, cfg.text_layers, encoder.output_dim)
    every_caption = sorted({c for _, caps in items.values() for c in caps})
    tokens = tokenizer(every_caption, padding="max_length", truncation=True, return_tensors="pt")
    caption_index = {c: i for i, c in enumerate(every_caption)}
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / cfg.temperature))))
    modalities = sorted(items)
    batches = {m: _batches(len(items[m][1]), min(cfg.batch_size, len(items[m][1])), rng) for m in modalities}

    encoder.requires_grad_(True).train()
    text_model.train()

    def embed(modality: str, idx: np.ndarray) -> torch.Tensor:
        x = inputs[modality]
        if modality == "image":
            return encoder.embed_pixels(x[idx])
        per = x.shape[0] // len(items[modality][1])  # clips per item
        rows = torch.from_numpy((idx[:, None] * per + np.arange(per)).reshape(-1))
        emb = encoder.embed_pixels(x[rows]) if modality == "video" else encoder.embed_audio_features(x[rows])
        return F.normalize(emb, dim=-1).view(len(idx), per, -1).mean(dim=1)

    def step(k: int) -> dict[str, torch.Tensor]:
        modality = modalities[k % len(modalities)]
        idx = next(batches[modality])
        ids = torch.tensor([caption_index[items[modality][1][i]] for i in idx])
        distinct, labels = torch.unique(ids, return_inverse=True)
        text = text_model(
            input_ids=tokens.input_ids[distinct], attention_mask=tokens.attention_mask[distinct]
        ).text_embeds
        loss = contrastive_loss(embed(modality, idx), text, labels, log_scale.exp().clamp(max=100))
        return {"loss": loss}

    params = [*encoder.parameters(), *text_model.parameters(), log_scale]
    optimise(params, step, steps=cfg.max_steps, lr=cfg.lr, name=f"encoder {name}", metrics=metrics,
             log_every=cfg.log_every, progress=cfg.progress, weight_decay=0.01)
    encoder.requires_grad_(False).eval()
    text_model.requires_grad_(False).eval()
    text_model.save_pretrained(str(out / "text_tower"))
    tokenizer.save_pretrained(str(out / "text_tower"))
    pipe.save_pretrained(out)
    say(f"saved the pipeline with the trained encoder {name!r} to {out} (text tower: {out / 'text_tower'})")
    return out
