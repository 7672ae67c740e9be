"""Reference-free and caption scores of the ``pairs`` suite (:mod:`anygen.eval.pairs`).

- CLIP score (Hessel et al. 2021, as torchmetrics reports it): ``100 * max(cos(image, text), 0)`` with a whole
  CLIP model (both towers) from a local folder; a video scores the mean over its frames.
- CLAP score, the same with a CLAP model (:class:`~anygen.encoders.clap.ClapEncoder`: audio resampled to the
  feature extractor's rate; audio longer than one window is the mean of evenly spaced windows).
- BLEU-4 and CIDEr-D of captions against references, by pycocoevalcap's scorers (the COCO caption reference
  code; the ``eval`` extra). Its PTB tokenizer needs Java, so captions are tokenized here instead: lower
  case, every character that is not a letter, digit or space removed, split on whitespace.

Nothing is downloaded: scorers load local Hugging Face folders only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anygen.errors import AnyGenError, WeightsError
from anygen.media import Audio, Video

EXTRA = "eval"
_NOT_WORD = re.compile(r"[^\w\s]|_")
_CLIP_EXPECTED = (
    "a local Hugging Face CLIP folder with both towers (e.g. a download of openai/clip-vit-large-patch14: "
    "config.json, model.safetensors, preprocessor_config.json and tokenizer files)"
)


# ---------------------------------------------------------------------------------------------- captions


def caption_tokens(text: str) -> str:
    """``text`` as the caption scorers see it: lower case, punctuation removed, single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


@dataclass
class CaptionScores:
    """Corpus BLEU-4 (COCO convention, in [0, 1]) and CIDEr-D (mean over items, as pycocoevalcap returns it:
    0 to 10; papers print it times 100), with the per-item values."""

    bleu4: float
    cider: float
    item_bleu4: list[float] = field(default_factory=list)
    item_cider: list[float] = field(default_factory=list)


def _coco_scorers() -> tuple[Any, Any]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise AnyGenError(
            f"BLEU-4 and CIDEr need pycocoevalcap: pip install 'anygen[{EXTRA}]' (or pip install pycocoevalcap)"
        ) from None
    return Bleu, Cider


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> CaptionScores:
    """BLEU-4 and CIDEr-D of ``hypotheses[i]`` against the captions ``references[i]`` (one or more each).

    CIDEr weighs n-grams by their rarity among all the references, so it means something only over many
    items (over one item every n-gram is common and it is 0)."""
    if len(hypotheses) != len(references):
        raise AnyGenError(f"{len(hypotheses)} captions but {len(references)} reference lists")
    if not hypotheses:
        raise AnyGenError("caption_scores needs at least one caption")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise AnyGenError(f"references[{i}] must be a non-empty list of captions")
    Bleu, Cider = _coco_scorers()
    res = {i: [caption_tokens(h)] for i, h in enumerate(hypotheses)}
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    bleu, item_bleu = Bleu(4).compute_score(gts, res, verbose=0)
    cider, item_cider = Cider().compute_score(gts, res)
    return CaptionScores(
        bleu4=float(bleu[3]),
        cider=float(cider),
        item_bleu4=[float(x) for x in item_bleu[3]],
        item_cider=[float(x) for x in np.asarray(item_cider).ravel()],
    )


# ---------------------------------------------------------------------------------------------- CLIP / CLAP


def clip_score(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``100 * max(cos(a_i, b_i), 0)`` of two ``[N, D]`` embedding batches (float32 ``[N]``)."""
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
    return 100 * cos.clamp(min=0)


class ClipScorer:
    """CLIP score of images (or video frames) against texts, with a whole ``CLIPModel``."""

    def __init__(self, model: Any, processor: Any, tokenizer: Any, *, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str = "cpu", batch_size: int = 16
    ) -> ClipScorer:
        """Load a local CLIP folder (offline, strict); anything else raises :class:`WeightsError`."""
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

        from anygen.encoders.clip import (
            CONFIG_NAME,
            PREPROCESSOR_NAME,
            WEIGHT_NAMES,
            _check_folder,
            _load_hf_component,
            _load_hf_model,
        )
        from anygen.encoders.token_configs import read_json

        root = _check_folder(directory, "CLIP", _CLIP_EXPECTED, [(CONFIG_NAME,)])
        model_type = read_json(root / CONFIG_NAME, "CLIP config").get("model_type")
        if model_type != "clip":
            raise WeightsError(
                f"{root / CONFIG_NAME} has model_type {model_type!r}; the CLIP score needs 'clip' "
                "(a whole CLIP model: text and vision towers)"
            )
        required = [WEIGHT_NAMES, (PREPROCESSOR_NAME,), ("tokenizer.json", "vocab.json")]
        _check_folder(root, "CLIP", _CLIP_EXPECTED, required)
        # older checkpoints (openai/clip-*) also store the constant position_ids buffers
        model = _load_hf_model(CLIPModel, root, "CLIP", allow_unexpected=lambda k: k.endswith("position_ids"))
        processor = _load_hf_component(CLIPImageProcessorPil, root, "CLIP image processor")
        tokenizer = _load_hf_component(AutoTokenizer, root, "CLIP tokenizer")
        return cls(model.to(device), processor, tokenizer, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[N, D]`` (truncated to the model's context)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            feats = self.model.get_text_features(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            out.append(feats.pooler_output.float())
        return torch.cat(out)

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Image embeddings ``[N, D]`` (CLIP preprocessing: resize, centre crop, CLIP mean/std)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            rgb = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            pixels = torch.from_numpy(
                np.ascontiguousarray(
                    self.processor(rgb, return_tensors="np")["pixel_values"], dtype=np.float32
                )
            )
            feats = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            out.append(feats.pooler_output.float())
        return torch.cat(out)

    def score_images(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """CLIP score of ``images[i]`` against ``texts[i]``."""
        return clip_score(self.embed_images(images), self.embed_texts(texts)).tolist()

    def score_videos(self, videos: Sequence[Video], texts: Sequence[str]) -> list[float]:
        """CLIP score of every frame of ``videos[i]`` against ``texts[i]``, averaged over the frames."""
        frames = [Image.fromarray(f) for v in videos for f in v.frames]
        owners = torch.tensor([i for i, v in enumerate(videos) for _ in range(v.num_frames)])
        text = self.embed_texts(texts)
        per_frame = clip_score(self.embed_images(frames), text[owners].to(self.device))
        sums = torch.zeros(len(videos)).index_add_(0, owners, per_frame.cpu())
        counts = torch.tensor([v.num_frames for v in videos], dtype=torch.float32)
        return (sums / counts).tolist()


class ClapScorer:
    """CLAP score of audio against texts (:class:`~anygen.encoders.clap.ClapEncoder`)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu") -> ClapScorer:
        """Load a local CLAP folder (a whole ``ClapModel``, offline, strict); else :class:`WeightsError`."""
        from anygen.encoders.clap import ClapEncoder

        return cls(ClapEncoder.from_pretrained(directory, device=device))

    def embed_audios(self, audios: Sequence[Audio]) -> torch.Tensor:
        """Unit audio embeddings ``[N, D]`` (resampled to the feature extractor's rate first)."""
        return self.encoder.encode("audio", list(audios))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings ``[N, D]`` in the audio space."""
        return self.encoder.encode_text(list(texts))

    def score_audios(self, audios: Sequence[Audio], texts: Sequence[str]) -> list[float]:
        """CLAP score of ``audios[i]`` against ``texts[i]``."""
        return clip_score(self.embed_audios(audios), self.embed_texts(texts)).tolist()
