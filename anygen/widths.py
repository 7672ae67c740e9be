"""Read the widths where graph nodes meet, without loading any weights.

A node loaded from ``path`` reports the widths in that folder's JSON configs. When the folder is not
there yet (real weights not downloaded), the widths declared in the node's ``config`` are used, so a
spec such as ``nextgpt-7b-v0`` validates before its checkpoints exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anygen.errors import SpecError

if TYPE_CHECKING:
    from anygen.spec import PipelineSpec


def _existing(spec: PipelineSpec, path: str | None) -> Path | None:
    resolved = spec.resolve(path)
    return resolved if resolved is not None and resolved.exists() else None


def _declared(config: dict | None, key: str, node: str):
    if config is None or key not in config:
        raise SpecError(
            f"{node}: cannot tell its width: its path is not there yet and its config has no {key!r}"
        )
    return config[key]


def llm_hidden_size(spec: PipelineSpec) -> int:
    folder = _existing(spec, spec.llm.path)
    if folder is not None:
        from anygen.spec import read_json

        config = read_json(folder / "config.json", "llm")
        config = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
        for key in _LLM_KEYS["hidden_size"]:
            if isinstance(config.get(key), int):
                return int(config[key])
        raise SpecError(
            f"llm: {folder / 'config.json'} has no hidden size ({', '.join(_LLM_KEYS['hidden_size'])}): "
            "the output projectors' width cannot be read"
        )
    return int(_declared(spec.llm.config, "hidden_size", "llm"))


# Names transformers configs use for the LLM's sizes (llama/mistral/qwen..., gpt2, opt/t5-style).
_LLM_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_key_value_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
}


def llm_shape(spec: PipelineSpec) -> tuple[str, dict[str, int | None]]:
    """Where the LLM's sizes come from (``llm.config`` or its ``config.json``) and the sizes: hidden_size,
    num_attention_heads, num_key_value_heads, head_dim, num_hidden_layers (None where the config leaves one
    out and it cannot be told without transformers)."""
    folder = _existing(spec, spec.llm.path)
    if folder is not None:
        from anygen.spec import read_json

        where, config = str(folder / "config.json"), read_json(folder / "config.json", "llm")
    else:
        where, config = "llm.config", dict(spec.llm.config or {})
    sizes: dict[str, int | None] = {}
    for name, keys in _LLM_KEYS.items():
        value = next((config[k] for k in keys if config.get(k) is not None), None)
        sizes[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return where, sizes


def encoder_output_dim(spec: PipelineSpec, name: str) -> int:
    node = spec.encoders[name]
    if node.type in TOKEN_ENCODER_TYPES:
        return int(token_encoder_config(spec, name).width)
    folder = _existing(spec, node.path)
    if folder is not None and folder.is_dir() and (folder / "config.json").is_file():
        from anygen.spec import read_json

        config = read_json(folder / "config.json", f"encoders.{name}")
        return int(config.get("output_dim") or config["projection_dim"])
    key = "projection_dim" if node.type == "clap" else "output_dim"
    config = node.config or {}
    # Widths the config leaves out are each type's default: ImageBind-huge's, or the tiny configs'.
    return int(config.get(key, _DEFAULT_ENCODER_WIDTH[node.type]))


_DEFAULT_ENCODER_WIDTH = {"imagebind": 1024, "tiny-imagebind": 32, "clip": 32, "clap": 32}

#: Encoders that give a fixed number of tokens per input (``[N, tokens, width]``) instead of one pooled vector.
TOKEN_ENCODER_TYPES = ("clip-vision-tokens", "siglip-vision-tokens", "whisper-audio-tokens")


def token_encoder_config(spec: PipelineSpec, name: str):
    """The sizes and settings of token encoder ``encoders.<name>``
    (:mod:`anygen.encoders.token_configs`): from its folder's configs (settings from its ``config``), else
    from its ``config``, which must declare the sizes when its path is not there yet."""
    from anygen.encoders import token_configs
    from anygen.errors import AnyGenError

    node = spec.encoders[name]
    folder = _existing(spec, node.path)
    try:
        if folder is not None:
            return token_configs.from_folder(node.type, folder, node.config)
        if node.path is not None:
            return token_configs.declared(node.type, node.config)
        return token_configs.from_config(node.type, node.config)
    except AnyGenError as err:
        raise SpecError(f"encoders.{name} ({node.type}): {err}") from None


def encoder_tokens(spec: PipelineSpec, name: str) -> dict[str, int] | None:
    """Tokens one input of each modality gives, for a token encoder; None for one pooled vector per input."""
    if spec.encoders[name].type not in TOKEN_ENCODER_TYPES:
        return None
    return dict(token_encoder_config(spec, name).tokens())


def encoder_output_text(spec: PipelineSpec, name: str) -> str:
    """What ``encoders.<name>`` gives per input, for ``anygen info``: ``32`` or ``16 x 32 per image, ...``."""
    width = encoder_output_dim(spec, name)
    tokens = encoder_tokens(spec, name)
    if tokens is None:
        return str(width)
    mods = spec.encoders[name].modalities
    return ", ".join(f"{tokens[m]} x {width} per {m}" for m in mods if m in tokens)


def llm_context(spec: PipelineSpec) -> int | None:
    """The LLM's context window (``max_position_embeddings`` or its aliases), None when its config does not say."""
    folder = _existing(spec, spec.llm.path)
    if folder is not None:
        from anygen.spec import read_json

        config = read_json(folder / "config.json", "llm")
    else:
        config = dict(spec.llm.config or {})
    value = next(
        (config[k] for k in ("max_position_embeddings", "n_positions", "max_sequence_length") if k in config),
        None,
    )
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def generator_condition_shape(spec: PipelineSpec, modality: str) -> tuple[int, int]:
    """What the generator's conditioning is per prompt: ``(tokens, width)``, or ``(1, total)`` for a layout of
    several tensors (packed, see :mod:`anygen.generators.conditioning`)."""
    return generator_layout(spec, modality).shape


def generator_layout(spec: PipelineSpec, modality: str):
    """The named tensors ``outputs.<modality>.generator`` is conditioned on
    (:class:`~anygen.generators.conditioning.ConditioningLayout`), from its configs (no weights): its folder, or
    its config (tiny knobs; a real model not downloaded yet declares ``condition_shape: [tokens, width]`` or, for
    several tensors, ``conditioning: {name: shape}``)."""
    from anygen.generators.conditioning import ConditioningLayout, ConditionTensor
    from anygen.generators.shapes import layout_from_config, layout_from_folder

    node = spec.outputs[modality].generator
    where = f"outputs.{modality}.generator"
    folder = _existing(spec, node.path)
    try:
        if folder is not None:
            return layout_from_folder(node.type, folder)
        if node.config is not None and "conditioning" in node.config:
            declared = node.config["conditioning"]
            if not isinstance(declared, dict) or not declared:
                raise SpecError(f"{where}.config.conditioning: expected {{tensor name: [tokens, width] or [width]}}")
            return ConditioningLayout(
                tuple(ConditionTensor(str(k), tuple(int(d) for d in v)) for k, v in declared.items())
            )
        if node.config is not None and "condition_shape" in node.config:
            tokens, width = node.config["condition_shape"]
            return ConditioningLayout.single(int(tokens), int(width))
        if node.config is None:
            raise SpecError(f"{where}: its path {node.path!r} is not there yet and it declares no config")
        return layout_from_config(node.type, node.config)
    except SpecError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise SpecError(f"{where}: cannot read its conditioning shape: {err}") from None


def generator_geometry(spec: PipelineSpec, modality: str):
    """The sizes ``outputs.<modality>.generator`` can make
    (:class:`~anygen.generators.shapes.GeneratorGeometry`), from its configs; unknown fields are None when
    its path is not there yet."""
    from anygen.generators.shapes import GeneratorGeometry, geometry_from_config, geometry_from_folder

    node = spec.outputs[modality].generator
    folder = _existing(spec, node.path)
    try:
        if folder is not None:
            return geometry_from_folder(node.type, folder)
        if node.config is not None:
            return geometry_from_config(node.type, node.config)
    except SpecError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise SpecError(f"outputs.{modality}.generator: cannot read its sizes: {err}") from None
    return GeneratorGeometry()


def generator_defaults(spec: PipelineSpec, modality: str) -> dict:
    """The generation defaults ``outputs.<modality>.generator`` will have, as far as its configs tell
    without building it: the tiny config's or the folder's (``anygen_generator.json``), then the spec's."""
    import json

    from anygen.generators.tiny import resolve_tiny_config

    node = spec.outputs[modality].generator
    folder = _existing(spec, node.path)
    base: dict = {}
    if folder is not None:
        sidecar = folder / "anygen_generator.json"
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
            base = dict(data.get("defaults") or {}) if isinstance(data, dict) else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            base = {}  # the generator's loader says what is wrong with it when it is built
    elif node.config is not None:
        base = dict(resolve_tiny_config(node.type, node.config)["defaults"])
    return {**base, **{k: v for k, v in node.defaults.items() if v is not None}}
