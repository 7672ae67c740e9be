"""CLAP audio encoder (AudioLDM's conditioning space) on transformers' ``ClapModel``; no laion-clap needed.

Audio is mixed to mono (by :class:`anygen.media.Audio`), resampled to the feature extractor's rate (48 kHz
for the real ``laion/clap-htsat-*`` models), turned into log-mel features by ``ClapFeatureExtractor`` and
embedded by the HTSAT audio tower plus its projection (``ClapModel.get_audio_features``). :meth:`ClapEncoder.
encode_text` embeds text with the RoBERTa text tower into the same space (AudioLDM conditions on exactly
these normalised text embeddings). Every vector is float32 with unit norm.

Deterministic where the reference is random: ``ClapFeatureExtractor`` crops audio longer than its window
(10 s for the real model) at a random offset (``rand_trunc``) or fuses random crops (``fusion``). Here audio
of at most one window is used whole (repeat-padded, as the extractor does), and longer audio is cut into
``audio_clips`` evenly spaced windows whose normalised embeddings are averaged and normalised again. For
fused checkpoints every window is passed with ``is_longer=False`` (the global-mel path). The global numpy RNG
is left as it was.

The laion-clap package is never imported (it pins numpy<2); ``anygen[clap]`` is only a documented extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoTokenizer,
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    RobertaTokenizer,
)

from anygen.encoders.clip import (
    CONFIG_NAME,
    ENCODE_BATCH,
    PREPROCESSOR_NAME,
    WEIGHT_NAMES,
    _check_folder,
    _check_request,
    _known_fields,
    _load_hf_component,
    _load_hf_model,
    _positive_int,
    _quiet_transformers,
    _read_settings,
    _write_settings,
)
from anygen.encoders.token_configs import read_json
from anygen.errors import AnyGenError, MediaError, WeightsError
from anygen.media import Audio

DEFAULT_AUDIO_CLIPS = 3
_EXPECTED = (
    "a local Hugging Face CLAP folder (e.g. a download of laion/clap-htsat-unfused: config.json, "
    "model.safetensors, preprocessor_config.json and tokenizer files)"
)


@dataclass(frozen=True)
class TinyClapConfig:
    """Sizes of a tiny random CLAP model (:meth:`ClapEncoder.from_config`).

    Text tower: RoBERTa-style, over a 261-token byte-level vocabulary built in code. Audio tower: HTSAT
    (Swin) with ``len(audio_depths)`` stages; stage ``i`` is ``audio_width * 2**i`` wide with
    ``audio_heads[i]`` heads. The log-mel spectrogram (``num_mel_bins`` x frames) is folded into a
    ``spec_size`` square, so ``spec_size`` must be a multiple of ``num_mel_bins`` and one window
    (``max_length_s`` seconds at ``sampling_rate``, hop ``hop_length``) must fit into
    ``spec_size * spec_size / num_mel_bins`` frames.
    """

    projection_dim: int = 32  # width of every returned vector (text and audio)
    text_hidden_size: int = 32
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate_size: int = 64
    max_text_length: int = 64  # tokens incl. <s> and </s>
    audio_width: int = 8  # HTSAT patch embedding width (patch_embeds_hidden_size)
    audio_depths: tuple[int, ...] = (1, 1)
    audio_heads: tuple[int, ...] = (2, 2)
    window_size: int = 4
    patch_size: int = 4  # also the patch stride
    spec_size: int = 32
    num_mel_bins: int = 16
    sampling_rate: int = 16_000
    hop_length: int = 256
    fft_window_size: int = 512
    max_length_s: int = 1
    frequency_min: int = 50
    frequency_max: int = 8_000
    enable_fusion: bool = False
    audio_clips: int = 3  # encoder setting: windows averaged for audio longer than max_length_s

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "enable_fusion":
                if not isinstance(value, bool):
                    raise AnyGenError(f"TinyClapConfig.enable_fusion must be a bool, got {value!r}")
            elif f.name in ("audio_depths", "audio_heads"):
                if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
                    raise AnyGenError(
                        f"TinyClapConfig.{f.name} must be a non-empty list of positive integers"
                    )
                object.__setattr__(
                    self,
                    f.name,
                    tuple(_positive_int(v, f"TinyClapConfig.{f.name}[{i}]") for i, v in enumerate(value)),
                )
            else:
                _positive_int(value, f"TinyClapConfig.{f.name}")
        problems = []
        if len(self.audio_depths) != len(self.audio_heads):
            problems.append(
                f"audio_depths {self.audio_depths} and audio_heads {self.audio_heads} differ in length"
            )
        for i, heads in enumerate(self.audio_heads):
            if (self.audio_width << i) % heads:
                problems.append(f"stage {i} width {self.audio_width << i} is not divisible by {heads} heads")
        if self.text_hidden_size % self.text_heads:
            problems.append(
                f"text_hidden_size {self.text_hidden_size} is not divisible by text_heads {self.text_heads}"
            )
        if self.max_text_length < 3:
            problems.append("max_text_length must be at least 3 (<s>, one token, </s>)")
        if self.spec_size % self.num_mel_bins:
            problems.append(
                f"spec_size {self.spec_size} is not a multiple of num_mel_bins {self.num_mel_bins}"
            )
        else:
            ratio = self.spec_size // self.num_mel_bins
            reduction = self.patch_size << (len(self.audio_depths) - 1)
            if self.spec_size % reduction or (self.spec_size // reduction) % ratio:
                problems.append(
                    f"spec_size {self.spec_size} must be a multiple of patch_size * 2**(stages-1) = {reduction}, "
                    f"and spec_size / {reduction} a multiple of spec_size / num_mel_bins = {ratio}"
                )
            frames = self.window_frames
            if frames > self.spec_size * ratio:
                problems.append(
                    f"one {self.max_length_s} s window is {frames} frames at hop {self.hop_length}; at most "
                    f"spec_size * spec_size / num_mel_bins = {self.spec_size * ratio} fit"
                )
        if not self.frequency_min < self.frequency_max <= self.sampling_rate // 2:
            problems.append(
                f"need frequency_min < frequency_max <= sampling_rate / 2, got {self.frequency_min}, "
                f"{self.frequency_max}, {self.sampling_rate}"
            )
        if problems:
            raise AnyGenError("TinyClapConfig: " + "; ".join(problems))

    @property
    def window_frames(self) -> int:
        """Log-mel frames of one ``max_length_s`` window (centred STFT: one frame per hop, plus one)."""
        return self.max_length_s * self.sampling_rate // self.hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["audio_depths"], data["audio_heads"] = list(self.audio_depths), list(self.audio_heads)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TinyClapConfig:
        """Build from a dict (``None`` = defaults); unknown keys are an error."""
        return cls(**_known_fields(cls, data or {}))


def byte_level_roberta_tokenizer(model_max_length: int = 512) -> RobertaTokenizer:
    """A RoBERTa tokenizer built in code: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, the 256 byte-level
    symbols, ``<mask>``=260; no merges, so every UTF-8 byte is one token (any text encodes, nothing is unknown)."""
    from tokenizers import pre_tokenizers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


class ClapEncoder(nn.Module):
    """Audio -> L2-normalised float32 ``[N, output_dim]`` (the :class:`~anygen.encoders.base.Encoder` protocol),
    plus :meth:`encode_text` into the same space.

    ``model`` is a transformers ``ClapModel``; ``feature_extractor`` its ``ClapFeatureExtractor``;
    ``tokenizer`` its (RoBERTa) tokenizer. Build with :meth:`from_pretrained` or :meth:`from_config`.
    """

    modalities: tuple[str, ...] = ("audio",)

    def __init__(
        self,
        model: ClapModel,
        feature_extractor: ClapFeatureExtractor,
        tokenizer: Any,
        *,
        audio_clips: int = DEFAULT_AUDIO_CLIPS,
    ) -> None:
        super().__init__()
        if not isinstance(model, ClapModel):
            raise AnyGenError(f"model must be a transformers ClapModel, got {type(model).__name__}")
        audio_cfg, text_cfg = model.config.audio_config, model.config.text_config
        if feature_extractor.feature_size != audio_cfg.num_mel_bins:
            raise AnyGenError(
                f"feature extractor makes {feature_extractor.feature_size} mel bins, but the audio model expects "
                f"{audio_cfg.num_mel_bins}"
            )
        if len(tokenizer) > text_cfg.vocab_size:
            raise AnyGenError(
                f"tokenizer has {len(tokenizer)} tokens, but the text model's vocabulary has {text_cfg.vocab_size}"
            )
        self.model = model
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.audio_clips = _positive_int(audio_clips, "audio_clips")
        self.output_dim = int(model.config.projection_dim)
        # RoBERTa positions start after the padding index, so that many slots are unusable.
        positions = text_cfg.max_position_embeddings - (text_cfg.pad_token_id or 0) - 1
        self.max_text_length = int(min(tokenizer.model_max_length, positions))
        self.eval()

    # ------------------------------------------------------------------ construction and checkpoints

    @classmethod
    def from_config(cls, config: TinyClapConfig | dict[str, Any] | None = None, seed: int = 0) -> ClapEncoder:
        """A tiny random CLAP; weights depend only on ``config`` and ``seed`` (the global RNG is untouched)."""
        cfg = config if isinstance(config, TinyClapConfig) else TinyClapConfig.from_dict(config)
        tokenizer = byte_level_roberta_tokenizer(cfg.max_text_length)
        text_config = ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden_size,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            intermediate_size=cfg.text_intermediate_size,
            max_position_embeddings=cfg.max_text_length + tokenizer.pad_token_id + 1,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        audio_config = ClapAudioConfig(
            num_mel_bins=cfg.num_mel_bins,
            spec_size=cfg.spec_size,
            patch_size=cfg.patch_size,
            patch_stride=[cfg.patch_size, cfg.patch_size],
            window_size=cfg.window_size,
            depths=list(cfg.audio_depths),
            num_attention_heads=list(cfg.audio_heads),
            patch_embeds_hidden_size=cfg.audio_width,
            hidden_size=cfg.audio_width << (len(cfg.audio_depths) - 1),  # width of the last stage
            hidden_dropout_prob=0.0,
            enable_fusion=cfg.enable_fusion,
            fusion_type="aff_2d" if cfg.enable_fusion else None,
        )
        config_ = ClapConfig(
            text_config=text_config.to_dict(),
            audio_config=audio_config.to_dict(),
            projection_dim=cfg.projection_dim,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ClapModel(config_)
        feature_extractor = ClapFeatureExtractor(
            feature_size=cfg.num_mel_bins,
            sampling_rate=cfg.sampling_rate,
            hop_length=cfg.hop_length,
            max_length_s=cfg.max_length_s,
            fft_window_size=cfg.fft_window_size,
            frequency_min=cfg.frequency_min,
            frequency_max=cfg.frequency_max,
            truncation="fusion" if cfg.enable_fusion else "rand_trunc",
            padding="repeatpad",
        )
        return cls(model, feature_extractor, tokenizer, audio_clips=cfg.audio_clips)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a Hugging Face CLAP folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``,
        tokenizer files) plus ``anygen_encoder.json``; :meth:`from_pretrained` reads it back identically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(str(out))
            self.feature_extractor.save_pretrained(str(out))
            self.tokenizer.save_pretrained(str(out))
        _write_settings(out, {"encoder": "clap", "audio_clips": self.audio_clips})
        return out

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        audio_clips: int | None = None,
    ) -> ClapEncoder:
        """Load a local CLAP folder (offline, strict): missing, mis-shaped or stray weights, a missing file or a
        non-CLAP config raise :class:`WeightsError`. ``audio_clips`` overrides the saved setting (default 3)."""
        root = _check_folder(
            directory,
            "CLAP",
            _EXPECTED,
            [(CONFIG_NAME,), WEIGHT_NAMES, (PREPROCESSOR_NAME,), ("tokenizer.json", "vocab.json")],
        )
        if not (root / "tokenizer.json").is_file() and not (root / "merges.txt").is_file():
            raise WeightsError(
                f"CLAP weights folder {str(root)!r} has vocab.json but no merges.txt; expected {_EXPECTED}"
            )
        model_type = read_json(root / CONFIG_NAME, "CLAP config").get("model_type")
        if model_type != "clap":
            hint = (
                " (a text-only tower such as AudioLDM's text_encoder cannot encode audio)"
                if model_type
                else ""
            )
            raise WeightsError(
                f"{root / CONFIG_NAME} has model_type {model_type!r}; expected 'clap' (a whole ClapModel){hint}"
            )
        model = _load_hf_model(ClapModel, root, "CLAP", dtype=dtype)
        feature_extractor = _load_hf_component(ClapFeatureExtractor, root, "CLAP feature extractor")
        tokenizer = _load_hf_component(AutoTokenizer, root, "CLAP tokenizer")
        clips = audio_clips if audio_clips is not None else _read_settings(root).get("audio_clips")
        try:
            encoder = cls(
                model,
                feature_extractor,
                tokenizer,
                audio_clips=DEFAULT_AUDIO_CLIPS if clips is None else clips,
            )
        except WeightsError:
            raise
        except AnyGenError as exc:
            if audio_clips is not None:
                raise
            raise WeightsError(f"CLAP folder {str(root)!r} is inconsistent: {exc}") from exc
        return encoder.to(device) if device is not None else encoder

    # ------------------------------------------------------------------ preprocessing

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def sampling_rate(self) -> int:
        """The rate the feature extractor expects (48 kHz for the real CLAP models)."""
        return int(self.feature_extractor.sampling_rate)

    @property
    def window_samples(self) -> int:
        """Samples in one model window (``max_length_s`` at :attr:`sampling_rate`; 480 000 for real CLAP)."""
        return int(self.feature_extractor.nb_max_samples)

    def audio_windows(self, audio: Audio) -> list[np.ndarray]:
        """The waveform at :attr:`sampling_rate`: whole if it fits one window, else ``audio_clips`` evenly spaced
        windows (first and last included; the centred one when ``audio_clips`` is 1)."""
        wave = audio.resample(self.sampling_rate).waveform
        size = self.window_samples
        if len(wave) <= size:
            return [wave]
        if self.audio_clips == 1:
            starts = np.array([(len(wave) - size) // 2])
        else:
            starts = np.linspace(0, len(wave) - size, self.audio_clips).round().astype(int)
        return [wave[s : s + size] for s in starts]

    def preprocess_audio(self, clips: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms at :attr:`sampling_rate`, each at most one window, -> (float32 log-mel features
        ``[N, 1 or 4, frames, mel]``, ``is_longer`` all False ``[N, 1]``)."""
        for i, clip in enumerate(clips):
            if len(clip) > self.window_samples:
                raise MediaError(
                    f"clip {i} has {len(clip)} samples; at most {self.window_samples} fit one window"
                )
        # "fusion" marks a random input as longer: keep the global numpy RNG as it was.
        state = np.random.get_state()
        try:
            out = self.feature_extractor(
                [np.asarray(c, dtype=np.float64) for c in clips],
                sampling_rate=self.sampling_rate,
                return_tensors="np",
            )
        finally:
            np.random.set_state(state)
        features = torch.from_numpy(np.ascontiguousarray(out["input_features"], dtype=np.float32))
        return features, torch.zeros(len(clips), 1, dtype=torch.bool)

    # ------------------------------------------------------------------ forward passes

    def embed_audio_features(
        self, features: torch.Tensor, is_longer: torch.Tensor | None = None
    ) -> torch.Tensor:
        """L2-normalised float32 audio embeddings ``[N, output_dim]`` from log-mel features."""
        if is_longer is None:
            is_longer = torch.zeros(features.shape[0], 1, dtype=torch.bool)
        out = self.model.get_audio_features(
            input_features=features.to(device=self.device, dtype=self.model.dtype),
            is_longer=is_longer.to(self.device),
        )
        return F.normalize(out.pooler_output.float(), dim=-1)

    def embed_clips(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """L2-normalised float32 ``[len(clips), output_dim]`` for one-window waveforms, in batches."""
        out = []
        for start in range(0, len(clips), ENCODE_BATCH):
            out.append(self.embed_audio_features(*self.preprocess_audio(clips[start : start + ENCODE_BATCH])))
        return torch.cat(out)

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        """L2-normalised float32 ``[len(items), output_dim]`` on the encoder's device (no gradients).

        Items are :class:`anygen.media.Audio` (or a path/bytes :meth:`Audio.load` reads), any rate, mono or not.
        """
        if modality == "text":
            raise AnyGenError("ClapEncoder.encode handles audio; use encode_text(texts) for text")
        _check_request(type(self).__name__, self.modalities, modality, items)
        audios = [_as_audio(item, i) for i, item in enumerate(items)]
        clips: list[np.ndarray] = []
        owners: list[int] = []
        for i, audio in enumerate(audios):
            windows = self.audio_windows(audio)
            clips.extend(windows)
            owners.extend([i] * len(windows))
        per_clip = self.embed_clips(clips)
        summed = torch.zeros(len(audios), per_clip.shape[-1], device=per_clip.device)
        summed.index_add_(0, torch.tensor(owners, device=per_clip.device), per_clip)
        return F.normalize(summed, dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 ``[len(texts), output_dim]`` text embeddings in the audio space (truncated to
        :attr:`max_text_length` tokens)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise AnyGenError(f"encode_text expects a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise AnyGenError("encode_text got an empty list; expected at least one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise AnyGenError(f"encode_text: texts[{i}] is a {type(text).__name__}; expected a string")
        out = []
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = self.tokenizer(
                list(texts[start : start + ENCODE_BATCH]),
                padding=True,
                truncation=True,
                max_length=self.max_text_length,
                return_tensors="pt",
            )
            features = self.model.get_text_features(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            )
            out.append(F.normalize(features.pooler_output.float(), dim=-1))
        return torch.cat(out)


def _as_audio(item: Any, index: int) -> Audio:
    if isinstance(item, (np.ndarray, list, tuple)):
        raise MediaError(
            f"encode('audio'): items[{index}] is a bare array; expected anygen.media.Audio "
            "(use anygen.media.Audio.load(waveform, sample_rate=...))"
        )
    return Audio.load(item, name=f"items[{index}]")
