"""ImageBind (vision, text and audio towers), written from the published architecture.

The module layout and parameter names follow Meta's released checkpoint (``imagebind_huge.pth``), so
its state dict loads directly; depth, thermal and IMU weights in it are ignored.

Per modality the model is: preprocessor (patch stem or token embedding, class token, learned
positional embedding) -> pre-norm transformer trunk -> head (LayerNorm, pick one token, linear
projection without bias to the shared width) -> postprocessor (L2 normalisation, then a scale for
text (learnable, clamped at 100) and audio (fixed 20)).

Inputs with a clip axis (``ndim >= 5``: video ``[B, clips, 3, T, H, W]``, audio
``[B, clips, 1, mel, frames]``) run every clip and average the per-clip outputs, after
normalisation (and scaling), exactly as the reference does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anygen.checkpoints import check_state_dict, torch_load_weights
from anygen.errors import AnyGenError, MediaError, WeightsError

MODALITIES = ("vision", "text", "audio")
_IGNORED_MODALITIES = ("depth", "thermal", "imu")
_SECTIONS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")

# Head counts cannot be read from weight shapes. ImageBind's own towers: ViT-H/14 vision (1280 wide,
# 16 heads of 80), OpenCLIP text (1024 wide, 16 heads), audio (768 wide, 12 heads).
_KNOWN_HEADS = {
    ("vision", 1280): 16,
    ("vision", 1024): 16,
    ("text", 1024): 16,
    ("text", 768): 12,
    ("audio", 768): 12,
}


def default_num_heads(modality: str, width: int) -> int:
    """Heads used when none are given: ImageBind's own value for its widths, else ``width // 64``."""
    return _KNOWN_HEADS.get((modality, width), max(1, width // 64))


@dataclass(frozen=True)
class TrunkConfig:
    """One modality's transformer: width, blocks, heads, MLP hidden size, options."""

    width: int
    depth: int
    heads: int
    mlp_hidden: int
    pre_norm: bool = False  # a LayerNorm before the first block (vision)
    bias_kv: bool = False  # learned key/value bias tokens in attention (audio)


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the vision, text and audio towers. Defaults are ``imagebind_huge``."""

    out_dim: int = 1024
    vision: TrunkConfig = field(default_factory=lambda: TrunkConfig(1280, 32, 16, 5120, pre_norm=True))
    text: TrunkConfig = field(default_factory=lambda: TrunkConfig(1024, 24, 16, 4096))
    audio: TrunkConfig = field(default_factory=lambda: TrunkConfig(768, 12, 12, 3072, bias_kv=True))
    vision_kernel: tuple[int, int, int] = (2, 14, 14)  # (frames, height, width) of one patch
    image_size: int = 224
    video_frames: int = 2
    vocab_size: int = 49408
    context_length: int = 77
    audio_kernel: int = 16
    audio_stride: int = 10
    audio_mel_bins: int = 128
    audio_frames: int = 204

    @property
    def vision_tokens(self) -> int:
        kt, kh, kw = self.vision_kernel
        return (self.video_frames // kt) * (self.image_size // kh) * (self.image_size // kw)

    @property
    def audio_grid(self) -> tuple[int, int]:
        k, s = self.audio_kernel, self.audio_stride
        return (self.audio_mel_bins - k) // s + 1, (self.audio_frames - k) // s + 1

    @property
    def audio_tokens(self) -> int:
        rows, cols = self.audio_grid
        return rows * cols


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


class _RepeatFrames(nn.Module):
    """Images ``[N, C, H, W]`` (or one-frame clips) -> clips ``[N, C, frames, H, W]`` by repetition."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1 and self.frames > 1:
            x = x.expand(-1, -1, self.frames, -1, -1)
        return x


class _PatchStem(nn.Module):
    """Patchify with ``proj`` and flatten to tokens ``[N, L, D]``; optional LayerNorm on the tokens."""

    def __init__(self, proj: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        if norm is not None:
            self.norm_layer = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        norm = getattr(self, "norm_layer", None)
        return norm(x) if norm is not None else x


class _PositionalEmbedding(nn.Module):
    def __init__(self, length: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, length, width))


class _PatchPreprocessor(nn.Module):
    """Stem tokens, a class token in front, plus a learned positional embedding."""

    def __init__(self, stem: _PatchStem, width: int, num_patches: int, name: str) -> None:
        super().__init__()
        self.name = name
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding_helper = _PositionalEmbedding(num_patches + 1, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] + 1 != pos.shape[1]:
            raise MediaError(
                f"{self.name} input of shape {tuple(x.shape)} gives {tokens.shape[1]} patches; "
                f"the model expects {pos.shape[1] - 1} (preprocess the input to the model's size)"
            )
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + pos


class _TextPreprocessor(nn.Module):
    """Token embedding + positional embedding; holds the causal attention mask."""

    def __init__(self, vocab_size: int, context_length: int, width: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("mask", mask)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[1] != self.pos_embed.shape[1]:
            raise AnyGenError(
                f"text input must be token ids [B, {self.pos_embed.shape[1]}], got shape {tuple(ids.shape)}"
            )
        return self.token_embedding(ids) + self.pos_embed


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``. Sequence-first layout."""

    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, bias=True, add_bias_kv=cfg.bias_kv)
        self.norm_1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = _Mlp(cfg.width, cfg.mlp_hidden)
        self.norm_2 = nn.LayerNorm(cfg.width, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.norm_2(x))


class _Trunk(nn.Module):
    def __init__(self, cfg: TrunkConfig) -> None:
        super().__init__()
        # Kept as a Sequential so the optional LayerNorm sits at index 0, as in the checkpoint.
        self.pre_transformer_layer = nn.Sequential(
            nn.LayerNorm(cfg.width, eps=1e-6) if cfg.pre_norm else nn.Identity()
        )
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)  # [L, B, D]
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x.transpose(0, 1)


class _SelectToken(nn.Module):
    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index, :]


class _TextHead(nn.Module):
    """Pick the end-of-text token (the largest id in each row), then LayerNorm + projection."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, out_dim, bias=False))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        eot = ids.argmax(dim=-1)
        return self.proj(x[torch.arange(x.shape[0], device=x.device), eot])


class _L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class _LogitScale(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), max_scale)``; a parameter or a fixed buffer."""

    def __init__(self, init: float, learnable: bool, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        value = torch.tensor(math.log(init), dtype=torch.float32)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def scale(self) -> torch.Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale() * x


def _vision_head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(width, eps=1e-6), _SelectToken(0), nn.Linear(width, out_dim, bias=False)
    )


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class ImageBindModel(nn.Module):
    """ImageBind's vision (images and video), text and audio encoders. Inference only.

    ``model({"vision": x, "text": ids, "audio": a})`` (any subset) returns a dict of ``[B, out_dim]``:

    * ``vision``: images ``[B, 3, 224, 224]``, or video ``[B, clips, 3, 2, 224, 224]`` (the 2 frames
      of each clip; spatial crops count as clips);
    * ``text``: token ids ``[B, 77]`` (CLIP BPE; the end-of-text token has the largest id);
    * ``audio``: ``[B, 1, 128, 204]`` or ``[B, clips, 1, 128, 204]`` normalised Kaldi fbank.

    With ``scale=True`` (default) the outputs are Meta's: L2-normalised, text times its logit scale,
    audio times 20, clips averaged after that. ``scale=False`` (or :meth:`embed`) skips the scales:
    per-clip unit vectors averaged over clips, which is what NExT-GPT feeds its input projector
    (exactly unit length for single images and texts; the clip mean of unit vectors otherwise).
    """

    def __init__(self, config: ImageBindConfig | None = None) -> None:
        super().__init__()
        cfg = config or ImageBindConfig()
        for name in MODALITIES:
            trunk = getattr(cfg, name)
            if trunk.width % trunk.heads:
                raise AnyGenError(f"{name}: width {trunk.width} is not divisible by {trunk.heads} heads")
        self.config = cfg
        kt, kh, kw = cfg.vision_kernel
        vision_stem = _PatchStem(
            nn.Sequential(
                _RepeatFrames(cfg.video_frames),
                nn.Conv3d(
                    3, cfg.vision.width, kernel_size=cfg.vision_kernel, stride=cfg.vision_kernel, bias=False
                ),
            )
        )
        audio_stem = _PatchStem(
            nn.Conv2d(1, cfg.audio.width, kernel_size=cfg.audio_kernel, stride=cfg.audio_stride, bias=False),
            norm=nn.LayerNorm(cfg.audio.width),
        )
        self.modality_preprocessors = nn.ModuleDict(
            {
                "vision": _PatchPreprocessor(vision_stem, cfg.vision.width, cfg.vision_tokens, "vision"),
                "text": _TextPreprocessor(cfg.vocab_size, cfg.context_length, cfg.text.width),
                "audio": _PatchPreprocessor(audio_stem, cfg.audio.width, cfg.audio_tokens, "audio"),
            }
        )
        self.modality_trunks = nn.ModuleDict({name: _Trunk(getattr(cfg, name)) for name in MODALITIES})
        self.modality_heads = nn.ModuleDict(
            {
                "vision": _vision_head(cfg.vision.width, cfg.out_dim),
                "text": _TextHead(cfg.text.width, cfg.out_dim),
                "audio": _vision_head(cfg.audio.width, cfg.out_dim),
            }
        )
        self.modality_postprocessors = nn.ModuleDict(
            {
                "vision": _L2Normalize(),
                "text": nn.Sequential(_L2Normalize(), _LogitScale(1 / 0.07, learnable=True)),
                "audio": nn.Sequential(_L2Normalize(), _LogitScale(20.0, learnable=False)),
            }
        )
        self.eval()

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def _scale_factor(self, modality: str) -> torch.Tensor | None:
        post = self.modality_postprocessors[modality]
        return post[1].scale() if isinstance(post, nn.Sequential) else None

    def logit_scale(self, modality: str) -> float | None:
        """The factor Meta's postprocessor applies after normalising (``None`` for vision)."""
        factor = self._scale_factor(modality)
        return None if factor is None else float(factor.detach())

    def encode(self, modality: str, x: torch.Tensor, *, scale: bool = True) -> torch.Tensor:
        """One modality's ``[B, out_dim]`` output (see the class docstring for input shapes)."""
        if modality not in MODALITIES:
            raise AnyGenError(f"ImageBindModel has no {modality!r} encoder; it has {', '.join(MODALITIES)}")
        clips = x.ndim >= 5
        if clips:
            batch, num_clips = x.shape[:2]
            x = x.reshape(batch * num_clips, *x.shape[2:])
        if modality == "text":
            tokens = self.modality_preprocessors["text"](x)
            mask = self.modality_preprocessors["text"].mask.to(tokens.dtype)
            hidden = self.modality_trunks["text"](tokens, attn_mask=mask)
            out = self.modality_heads["text"](hidden, x)
        else:
            expected = 3 if modality == "vision" else 1
            if x.ndim not in (4, 5) or x.shape[1] != expected:
                raise MediaError(
                    f"{modality} input has shape {tuple(x.shape)}; see ImageBindModel for shapes"
                )
            tokens = self.modality_preprocessors[modality](x.to(self._dtype()))
            out = self.modality_heads[modality](self.modality_trunks[modality](tokens))
        out = F.normalize(out, dim=-1, p=2)
        if scale:
            factor = self._scale_factor(modality)
            if factor is not None:
                out = factor * out
        if clips:
            out = out.reshape(batch, num_clips, -1).mean(dim=1)
        return out

    def forward(self, inputs: Mapping[str, torch.Tensor], *, scale: bool = True) -> dict[str, torch.Tensor]:
        return {name: self.encode(name, value, scale=scale) for name, value in inputs.items()}

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs without the text/audio scales (NExT-GPT's projector input)."""
        return self.forward(inputs, scale=False)

    def _dtype(self) -> torch.dtype:
        return self.modality_heads["vision"][2].weight.dtype


# --------------------------------------------------------------------------------------------------
# Loading Meta's checkpoint
# --------------------------------------------------------------------------------------------------


def _model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``model.`` prefix (keeping only those keys when present) and drop other modalities."""
    if any(k.startswith("model.") for k in state_dict):
        state_dict = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) > 1 and parts[0] in _SECTIONS and parts[1] in _IGNORED_MODALITIES:
            continue
        out[key] = value
    return out


def _need(sd: Mapping[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    if key not in sd:
        raise WeightsError(f"ImageBind checkpoint is missing {key!r}")
    tensor = sd[key]
    if tensor.ndim != ndim:
        raise WeightsError(
            f"ImageBind checkpoint: {key!r} has shape {tuple(tensor.shape)}, expected {ndim}-D"
        )
    return tensor


def _trunk_config(sd, modality: str, heads: int | None) -> TrunkConfig:
    prefix = f"modality_trunks.{modality}."
    pattern = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    if not indices:
        raise WeightsError(f"ImageBind checkpoint has no {modality} transformer blocks ({prefix}blocks.*)")
    width = _need(sd, f"{prefix}blocks.0.norm_1.weight", 1).shape[0]
    mlp_hidden = _need(sd, f"{prefix}blocks.0.mlp.fc1.weight", 2).shape[0]
    heads = heads or default_num_heads(modality, width)
    if width % heads:
        raise WeightsError(f"{modality}: width {width} is not divisible by {heads} heads")
    return TrunkConfig(
        width=width,
        depth=max(indices) + 1,
        heads=heads,
        mlp_hidden=mlp_hidden,
        # Fixed by ImageBind's architecture (not guessed from the keys, so a checkpoint lacking them is
        # reported as incomplete): a LayerNorm before the vision trunk, key/value bias tokens in audio.
        pre_norm=modality == "vision",
        bias_kv=modality == "audio",
    )


def _heads_for(num_heads: int | Mapping[str, int] | None, modality: str) -> int | None:
    if num_heads is None:
        return None
    if isinstance(num_heads, int):
        return num_heads
    unknown = set(num_heads) - set(MODALITIES)
    if unknown:
        raise AnyGenError(f"num_heads: unknown modalities {sorted(unknown)} (use {', '.join(MODALITIES)})")
    return num_heads.get(modality)


def config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_heads: int | Mapping[str, int] | None = None
) -> ImageBindConfig:
    """Read the tower sizes from a checkpoint's tensor shapes (``num_heads`` cannot be; see
    :func:`default_num_heads`). Accepts keys with or without a ``model.`` prefix."""
    sd = _model_keys(state_dict)
    pre = "modality_preprocessors."
    conv = _need(sd, pre + "vision.rgbt_stem.proj.1.weight", 5)
    vision_pos = _need(sd, pre + "vision.pos_embedding_helper.pos_embed", 3)
    kt, kh, kw = (int(s) for s in conv.shape[2:])
    patches = vision_pos.shape[1] - 1
    grid = math.isqrt(patches)
    if kh != kw or grid * grid != patches:
        raise WeightsError(
            f"vision: cannot derive a square image size from patch kernel {(kt, kh, kw)} and "
            f"{patches} position slots"
        )
    tokens = _need(sd, pre + "text.token_embedding.weight", 2)
    text_pos = _need(sd, pre + "text.pos_embed", 3)
    audio_conv = _need(sd, pre + "audio.rgbt_stem.proj.weight", 4)
    audio_pos = _need(sd, pre + "audio.pos_embedding_helper.pos_embed", 3)
    out_dim = _need(sd, "modality_heads.vision.2.weight", 2).shape[0]
    for key in ("modality_heads.text.proj.1.weight", "modality_heads.audio.2.weight"):
        if _need(sd, key, 2).shape[0] != out_dim:
            raise WeightsError(f"{key} projects to {sd[key].shape[0]}, but vision projects to {out_dim}")
    cfg = ImageBindConfig(
        out_dim=out_dim,
        vision=_trunk_config(sd, "vision", _heads_for(num_heads, "vision")),
        text=_trunk_config(sd, "text", _heads_for(num_heads, "text")),
        audio=_trunk_config(sd, "audio", _heads_for(num_heads, "audio")),
        vision_kernel=(kt, kh, kw),
        image_size=grid * kh,
        video_frames=kt,
        vocab_size=tokens.shape[0],
        context_length=text_pos.shape[1],
        audio_kernel=int(audio_conv.shape[-1]),
    )
    if cfg.audio_tokens + 1 != audio_pos.shape[1]:
        raise WeightsError(
            f"audio: {audio_pos.shape[1] - 1} position slots, but a {cfg.audio_mel_bins}x{cfg.audio_frames} "
            f"fbank with kernel {cfg.audio_kernel} and stride {cfg.audio_stride} gives {cfg.audio_tokens} patches"
        )
    return cfg


def imagebind_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: int | Mapping[str, int] | None = None
) -> ImageBindModel:
    """Build an :class:`ImageBindModel` sized from ``state_dict`` (Meta's key names, optionally all under
    ``model.``) and load it strictly for vision, text and audio; depth/thermal/IMU keys are ignored.

    ``num_heads``: one count for every tower or ``{"vision": 16, ...}``; unspecified towers use
    :func:`default_num_heads` (right for ``imagebind_huge``). Missing, unexpected or mis-shaped keys raise
    :class:`~anygen.errors.WeightsError` naming them. The model's tensors are the state dict's (no copy).
    """
    sd = _model_keys(state_dict)
    cfg = config_from_state_dict(sd, num_heads)
    with torch.device("meta"):
        model = ImageBindModel(cfg)
    check_state_dict(model.state_dict(), sd, "ImageBind state dict")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def load_imagebind_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file: Meta's ``.pth`` (``torch.load``, weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"ImageBind checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch_load_weights(path, f"ImageBind checkpoint {path}")
    except WeightsError:
        raise
    except Exception as exc:  # unreadable / not a checkpoint
        raise WeightsError(f"cannot read ImageBind checkpoint {path}: {exc}") from exc
    if isinstance(state, Mapping) and len(state) == 1:
        (only,) = state.values()
        if isinstance(only, Mapping):  # {"model": {...}} / {"state_dict": {...}} wrappers
            state = only
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not contain a state dict of tensors")
    return dict(state)


# --------------------------------------------------------------------------------------------------
# The Encoder-protocol wrapper
# --------------------------------------------------------------------------------------------------


class ImageBindEncoder(nn.Module):
    """:class:`~anygen.encoders.base.Encoder` over ImageBind: images, videos and audio -> ``[N, out_dim]``.

    Preprocesses each item as ImageBind's reference loader does (see
    :mod:`anygen.encoders.imagebind_preprocess`) and returns :meth:`ImageBindModel.embed` outputs: the
    L2-normalised embedding with no logit scale, i.e. what NExT-GPT feeds its input projector. Images
    give exact unit vectors; video (5 clips x 3 crops) and audio (3 clips) give the mean of per-clip
    unit vectors, as in NExT-GPT, unless ``renormalize=True``, which rescales every row to unit length.
    """

    modalities = ("image", "video", "audio")

    def __init__(self, model: ImageBindModel, *, batch_size: int = 8, renormalize: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.output_dim = model.out_dim
        self.batch_size = max(1, int(batch_size))
        self.renormalize = renormalize

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        *,
        num_heads: int | Mapping[str, int] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> ImageBindEncoder:
        model = imagebind_from_state_dict(state_dict, num_heads=num_heads)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        return cls(model, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        num_heads: int | Mapping[str, int] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> ImageBindEncoder:
        """Load Meta's ``imagebind_huge.pth`` (or the same weights as ``.safetensors``)."""
        return cls.from_state_dict(
            load_imagebind_state_dict(path), num_heads=num_heads, device=device, dtype=dtype, **kwargs
        )

    @property
    def device(self) -> torch.device:
        return self.model.modality_heads["vision"][2].weight.device

    def preprocess(self, modality: str, items: list) -> torch.Tensor:
        """The model input for ``items``: ``[N, 3, S, S]``, ``[N, 15, 3, 2, S, S]`` or ``[N, 3, 1, 128, 204]``."""
        from anygen.encoders import imagebind_preprocess as pre

        cfg = self.model.config
        if modality == "image":
            return pre.images_to_tensor(items, size=cfg.image_size)
        if modality == "video":
            return pre.videos_to_tensor(items, size=cfg.image_size, frames_per_clip=cfg.video_frames)
        if modality == "audio":
            return pre.audios_to_tensor(
                items, num_mel_bins=cfg.audio_mel_bins, target_frames=cfg.audio_frames
            )
        raise AnyGenError(f"ImageBindEncoder encodes {', '.join(self.modalities)}, not {modality!r}")

    @torch.no_grad()  # not inference_mode: callers may feed the result to layers they train
    def encode(self, modality: str, items: list) -> torch.Tensor:
        if modality not in self.modalities:
            raise AnyGenError(f"ImageBindEncoder encodes {', '.join(self.modalities)}, not {modality!r}")
        items = list(items)
        dtype = self.model._dtype()
        if not items:
            return torch.empty(0, self.output_dim, device=self.device, dtype=dtype)
        key = "audio" if modality == "audio" else "vision"
        outputs = []
        for start in range(0, len(items), self.batch_size):
            x = self.preprocess(modality, items[start : start + self.batch_size])
            outputs.append(self.model.encode(key, x.to(self.device, dtype), scale=False))
        out = torch.cat(outputs)
        return F.normalize(out, dim=-1) if self.renormalize else out
