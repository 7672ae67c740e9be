"""Build each node of a spec, from its config (random weights from its seed) or from its weights path."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from anygen import widths
from anygen.chat_template import bind_template
from anygen.checkpoints import check_state_dict, load_error_reason
from anygen.errors import SpecError, WeightsError
from anygen.llm import LanguageModel
from anygen.projectors import MultiOutputProjector, OutputProjector, make_input_projector
from anygen.spec import PipelineSpec


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SpecError(f"unknown torch dtype {name!r} (use e.g. float32, float16, bfloat16)")
    return dtype


def _require(path: Path | None, node: str) -> Path:
    if path is None or not path.exists():
        raise WeightsError(
            f"{node}: weights not found at {path}. Run `anygen weights verify <pipeline>` to see what is missing "
            "and how to get it."
        )
    return path


def build_encoder(spec: PipelineSpec, name: str) -> torch.nn.Module:
    node = spec.encoders[name]
    path = spec.resolve(node.path)
    if node.type == "tiny-imagebind":
        from anygen.encoders.tiny import TinyImageBindConfig, TinyImageBindEncoder

        if path is not None:
            return TinyImageBindEncoder.from_pretrained(_require(path, f"encoders.{name}"))
        return TinyImageBindEncoder.from_config(TinyImageBindConfig.from_dict(node.config), seed=node.seed)
    if node.type in widths.TOKEN_ENCODER_TYPES:
        return _build_token_encoder(spec, name, path)
    if node.type in ("clip", "clap"):
        from anygen.encoders.clap import ClapEncoder
        from anygen.encoders.clip import ClipImageEncoder

        cls = ClapEncoder if node.type == "clap" else ClipImageEncoder
        if path is not None:
            return cls.from_pretrained(_require(path, f"encoders.{name}"))
        return cls.from_config(node.config, seed=node.seed)
    from anygen.encoders.imagebind import ImageBindEncoder

    return ImageBindEncoder.from_checkpoint(_require(path, f"encoders.{name}"))


def _build_token_encoder(spec: PipelineSpec, name: str, path: Path | None) -> torch.nn.Module:
    """A ``*-tokens`` encoder: random from its config, or its folder with the config's settings."""
    node = spec.encoders[name]
    if node.type == "whisper-audio-tokens":
        from anygen.encoders.whisper_tokens import WhisperTokenEncoder

        if path is not None:
            return WhisperTokenEncoder.from_pretrained(_require(path, f"encoders.{name}"), settings=node.config)
        return WhisperTokenEncoder.from_config(node.config, seed=node.seed)
    from anygen.encoders.vision_tokens import VisionTokenEncoder

    if path is not None:
        folder = _require(path, f"encoders.{name}")
        return VisionTokenEncoder.from_pretrained(node.type, folder, settings=node.config)
    return VisionTokenEncoder.from_config(node.type, node.config, seed=node.seed)


def build_llm(spec: PipelineSpec) -> LanguageModel:
    node = spec.llm
    signal_tokens = {m: out.signal_tokens.names() for m, out in spec.outputs.items()}
    path = spec.resolve(node.path)
    if path is not None:
        lm = LanguageModel.from_pretrained(
            _require(path, "llm"), signal_tokens, node.hidden_layer, torch_dtype=_dtype(node.torch_dtype)
        )
        if node.adapter is not None:
            lm.load_adapter(_require(spec.resolve(node.adapter), "llm.adapter"))
        bind_template(node.template, lm, str(path))
        return lm
    if node.tokenizer.type != "byte-level":
        raise SpecError("llm: a model built from config needs tokenizer.type: byte-level (or give a path)")
    from anygen.tokenizer import byte_level_tokenizer

    lm = LanguageModel.from_config(
        node.config, byte_level_tokenizer(), signal_tokens, node.seed, node.hidden_layer
    )
    bind_template(node.template, lm, "llm.tokenizer (byte-level)")
    return lm


def _load_module_weights(module: torch.nn.Module, path: Path, node: str) -> None:
    try:
        state = load_file(_require(path, node))
    except (OSError, SafetensorError) as err:
        raise WeightsError(
            f"{node}: {path} could not be read as safetensors: {load_error_reason(err)}"
        ) from None
    check_state_dict(module.state_dict(), state, f"{node}: {path}")
    module.load_state_dict(state)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_input_projector(spec: PipelineSpec, name: str, load: bool = True) -> torch.nn.Module:
    node = spec.input_projectors[name]
    in_dim = widths.encoder_output_dim(spec, node.encoder)
    proj = _seeded(
        node.seed,
        lambda: make_input_projector(
            node.type,
            in_dim,
            widths.llm_hidden_size(spec),
            node.num_tokens or 1,
            d_model=node.d_model,
            nhead=node.nhead,
            num_layers=node.num_layers,
        ),
    )
    if load and node.path is not None:
        _load_module_weights(proj, spec.resolve(node.path), f"input_projectors.{name}")
    return proj.eval()


def build_output_projector(spec: PipelineSpec, modality: str, load: bool = True) -> OutputProjector:
    out = spec.outputs[modality]
    node = out.projector
    layout = widths.generator_layout(spec, modality)
    tokens, width = layout.shape
    hidden = widths.llm_hidden_size(spec)
    shape = dict(
        d_model=node.d_model,
        nhead=node.nhead,
        num_encoder_layers=node.num_encoder_layers,
        num_decoder_layers=node.num_decoder_layers,
        dim_feedforward=node.dim_feedforward,
    )
    if layout.packed:  # one head per conditioning tensor
        heads = {n: (h.out_dim or layout[n].width, h.num_queries or layout[n].tokens) for n, h in node.tensors.items()}
        proj = _seeded(node.seed, lambda: MultiOutputProjector(layout, node.type, hidden, heads, **shape))
    else:
        proj = _seeded(
            node.seed,
            lambda: OutputProjector(node.type, hidden, node.out_dim or width, node.num_queries or tokens, **shape),
        )
    if load and node.path is not None:
        _load_module_weights(proj, spec.resolve(node.path), f"outputs.{modality}.projector")
    return proj.eval()


def build_generator(spec: PipelineSpec, modality: str):
    from anygen.generators import build_generator as build

    node = spec.outputs[modality].generator
    path = spec.resolve(node.path)
    if path is not None:
        _require(path, f"outputs.{modality}.generator")
        generator = build(node.type, path=path, torch_dtype=_dtype(node.torch_dtype))
    else:
        generator = build(node.type, config=node.config, seed=node.seed)
    if node.cpu_offload:
        generator.enable_model_cpu_offload()
    return generator


def save_module(module: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, path)
