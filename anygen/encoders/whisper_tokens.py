"""``whisper-audio-tokens``: the states of a Whisper encoder (transformers ``WhisperEncoder``) as audio tokens.

Audio is resampled to the feature extractor's rate (16 kHz for the real models), padded with silence or cut to
the encoder's window (its first ``2 * max_source_positions * hop_length`` samples: 30 s for the real models),
turned into log-mel features by ``WhisperFeatureExtractor`` (numpy), and run through the encoder. Layer
``feature_layer``'s states (-1: the encoder's output, after its final layer norm), average-pooled over time by
``pool``, are the tokens: float32 ``[max_source_positions // pool, d_model]`` per input, whatever its length.

Weights: :meth:`WhisperTokenEncoder.from_config` (tiny, random) or :meth:`WhisperTokenEncoder.from_pretrained`
(a local Hugging Face Whisper folder with safetensors: a whole ``WhisperForConditionalGeneration`` /
``WhisperModel``, whose decoder is skipped, or an encoder as :meth:`~WhisperTokenEncoder.save_pretrained` writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from anygen.encoders import token_configs
from anygen.encoders.clap import _as_audio
from anygen.encoders.clip import (
    ENCODE_BATCH,
    PREPROCESSOR_NAME,
    _check_folder,
    _check_request,
    _load_hf_component,
    _quiet_transformers,
)
from anygen.encoders.token_base import _NO_BIN, SAFETENSORS_NAMES, TokenEncoder, find_prefix, load_tower
from anygen.encoders.token_configs import WhisperTokensConfig
from anygen.errors import AnyGenError, WeightsError

KIND = "whisper-audio-tokens"


class WhisperTokenEncoder(TokenEncoder):
    """Audio -> float32 ``[N, max_source_positions // pool, d_model]`` Whisper encoder states."""

    kind = KIND
    modalities: tuple[str, ...] = ("audio",)

    def __init__(
        self, model: WhisperEncoder, feature_extractor: WhisperFeatureExtractor, config: WhisperTokensConfig
    ) -> None:
        super().__init__(config)
        if not isinstance(model, WhisperEncoder):
            raise AnyGenError(f"model must be a transformers WhisperEncoder, got {type(model).__name__}")
        if feature_extractor.feature_size != model.config.num_mel_bins:
            raise AnyGenError(
                f"the feature extractor makes {feature_extractor.feature_size} mel bins, but the encoder expects "
                f"{model.config.num_mel_bins}"
            )
        self.model = model
        self.feature_extractor = feature_extractor
        self.eval()

    @classmethod
    def from_config(
        cls, config: WhisperTokensConfig | dict[str, Any] | None = None, seed: int = 0
    ) -> WhisperTokenEncoder:
        """A tiny random encoder; its weights depend only on ``config`` and ``seed`` (global RNG untouched)."""
        cfg = config if isinstance(config, WhisperTokensConfig) else token_configs.from_config(KIND, config)
        whisper_config = WhisperConfig(
            d_model=cfg.d_model,
            encoder_layers=cfg.num_layers,
            encoder_attention_heads=cfg.num_heads,
            encoder_ffn_dim=cfg.ffn_dim,
            num_mel_bins=cfg.num_mel_bins,
            max_source_positions=cfg.max_source_positions,
            decoder_layers=1,
            decoder_attention_heads=cfg.num_heads,
            decoder_ffn_dim=cfg.ffn_dim,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = WhisperEncoder(whisper_config)
        feature_extractor = WhisperFeatureExtractor(
            feature_size=cfg.num_mel_bins,
            sampling_rate=cfg.sampling_rate,
            hop_length=cfg.hop_length,
            n_fft=cfg.n_fft,
            chunk_length=max(1, round(cfg.window_samples / cfg.sampling_rate)),
        )
        return cls(model, feature_extractor, cfg)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` (the encoder), ``preprocessor_config.json`` and
        ``anygen_encoder.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(str(out))
            self.feature_extractor.save_pretrained(str(out))
        self._write_settings(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        settings: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> WhisperTokenEncoder:
        """Load a local Whisper folder (offline, strict). ``settings`` (feature_layer, pool) override the
        folder's ``anygen_encoder.json``."""
        root = _check_folder(
            directory,
            "Whisper",
            f"a local Hugging Face Whisper folder with safetensors weights, e.g. a download of openai/whisper-base ({_NO_BIN})",
            [("config.json",), SAFETENSORS_NAMES, (PREPROCESSOR_NAME,)],
        )
        try:
            cfg = token_configs.from_folder(KIND, root, settings)
            whisper_config = WhisperConfig.from_dict(token_configs.read_json(root / "config.json"))
        except (AnyGenError, TypeError, ValueError) as exc:
            raise WeightsError(f"Whisper folder {str(root)!r}: {exc}") from exc
        with torch.random.fork_rng(devices=[]), _quiet_transformers():
            model = WhisperEncoder(whisper_config)
        prefix = find_prefix(root, "Whisper", "conv1.weight", ("model.encoder.", "encoder.", ""))
        load_tower(model, root, "Whisper", prefix=prefix)
        feature_extractor = _load_hf_component(WhisperFeatureExtractor, root, "Whisper feature extractor")
        try:
            encoder = cls(model.eval(), feature_extractor, cfg)
        except AnyGenError as exc:
            raise WeightsError(f"Whisper folder {str(root)!r} is inconsistent: {exc}") from exc
        return encoder.to(device) if device is not None else encoder

    @property
    def sampling_rate(self) -> int:
        return int(self.config.sampling_rate)

    def preprocess_audio(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """Waveforms at :attr:`sampling_rate` -> log-mel features ``[N, num_mel_bins, 2 * max_source_positions]``
        (each padded with silence or cut to the window)."""
        out = self.feature_extractor(
            [np.asarray(c, dtype=np.float32) for c in clips],
            sampling_rate=self.sampling_rate,
            padding="max_length",
            max_length=self.config.window_samples,
            truncation=True,
            return_tensors="np",
        )
        return torch.from_numpy(np.ascontiguousarray(out["input_features"], dtype=np.float32))

    def tokens_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Layer ``feature_layer``'s states, pooled: ``[N, max_source_positions // pool, d_model]``."""
        features = features.to(device=self.device, dtype=self.model.dtype)
        states = self.model(features, output_hidden_states=True).hidden_states[self.config.feature_layer]
        if self.config.pool > 1:
            states = F.avg_pool1d(states.transpose(1, 2), self.config.pool, self.config.pool).transpose(1, 2)
        return states.float()

    @torch.no_grad()
    def encode(self, modality: str, items: Sequence[Any]) -> torch.Tensor:
        """float32 ``[len(items), output_tokens["audio"], output_dim]`` on the encoder's device (no gradients).

        Items are :class:`anygen.media.Audio` (or a path/bytes :meth:`Audio.load` reads), any rate and length.
        """
        _check_request(type(self).__name__, self.modalities, modality, items)
        clips = [_as_audio(item, i).resample(self.sampling_rate).waveform for i, item in enumerate(items)]
        out = [
            self.tokens_from_features(self.preprocess_audio(clips[i : i + ENCODE_BATCH]))
            for i in range(0, len(clips), ENCODE_BATCH)
        ]
        return torch.cat(out)
