"""Convert NExT-GPT's released legacy checkpoint (``7b_tiva_v0/pytorch_model.pt``) to an anygen pipeline folder.

The legacy checkpoint is a *delta* over Vicuna-7B v0 (itself a delta over LLaMA-1 7B). It holds only what
NExT-GPT trained:

* ``llama_proj.{weight,bias}``: the input projector, ImageBind (1024) -> LLM (4096);
* ``llama_model.base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.default.weight``: a LoRA
  (r=32, alpha=32, dropout 0.1) on the attention of every layer;
* ``llama_model.base_model.model.{model.embed_tokens,lm_head}.weight``: the whole input embedding and LM head,
  resized to 32038 rows (32000 LLaMA tokens + 38 new ones; training changed every row);
* ``gen_text_hidden_fcs{,_video,_audio}.0.*``: the three output projectors (NExT-GPT's ``TextFcLayer``).

NExT-GPT loads it with ``strict=False``, so a wrong or truncated file fails silently (gibberish). Here the key
set must match ``legacy_delta_keys.json`` exactly and every shape must agree with the others and with the
Vicuna folder, or the conversion is refused with the list of what is wrong. The file is read with
``torch.load(weights_only=True)`` only: a pickle of arbitrary objects is refused, never executed.

The output folder holds ``llm/`` (a Hugging Face Llama folder: Vicuna with the LoRA merged, the new embeddings
and head, and the 38 tokens at ids 32000-32037), ``input_projectors/imagebind.safetensors``,
``outputs/<modality>/projector.safetensors`` and ``pipeline.yaml`` (the bundled ``nextgpt-7b-v0`` spec with
paths into the folder), so ``AnyToAnyPipeline.from_pretrained(out)`` loads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from anygen.checkpoints import torch_load_weights
from anygen.errors import AnyGenError, WeightsError
from anygen.projectors import InputProjector, OutputProjector, output_projector_from_state_dict

#: The LLaMA-1 vocabulary the legacy checkpoint extends.
BASE_VOCAB_SIZE = 32000
#: Tokens NExT-GPT added, in the order it added them (ids 32000..32037).
LEGACY_TOKENS: tuple[str, ...] = (
    "<Img>",
    "</Img>",
    *(f"[IMG{i}]" for i in range(4)),
    *(f"[VID{i}]" for i in range(24)),
    *(f"[AUD{i}]" for i in range(8)),
)
LEGACY_VOCAB_SIZE = BASE_VOCAB_SIZE + len(LEGACY_TOKENS)
#: Key prefix of each output projector in the legacy checkpoint.
OUTPUT_PREFIXES = {
    "image": "gen_text_hidden_fcs.0.",
    "video": "gen_text_hidden_fcs_video.0.",
    "audio": "gen_text_hidden_fcs_audio.0.",
}
LLM_PREFIX = "llama_model.base_model.model."
EMBED_KEY = LLM_PREFIX + "model.embed_tokens.weight"
HEAD_KEY = LLM_PREFIX + "lm_head.weight"
INPUT_PROJ_KEYS = ("llama_proj.weight", "llama_proj.bias")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
DEFAULT_LORA_ALPHA = 32.0
LORA_DROPOUT = 0.1
OUTPUT_PROJECTOR_HEADS = 4  # TextFcLayer's nn.Transformer(nhead=4); not readable from shapes
_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.([qkvo]_proj)\.lora_([AB])\.default\.weight$"
)
_WRONG_BASE = (
    "NExT-GPT's checkpoint extends exactly the 32000-token LLaMA-1 vocabulary of Vicuna-7B v0, a delta over the "
    "original LLaMA-1 7B; a different count means a different base (Llama 2, Vicuna v1.x, an already converted "
    "folder). Rebuild it from LLaMA-1 7B and lmsys/vicuna-7b-delta-v0 with FastChat 0.1.10's apply_delta "
    "(weights/README.md, 'Pitfalls')"
)


# -- the reference key list -----------------------------------------------------------------------------
def legacy_key_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the released full-size checkpoint with its shape (shipped as ``legacy_delta_keys.json``)."""
    text = resources.files("anygen.convert").joinpath("legacy_delta_keys.json").read_text()
    return {k: tuple(v) for k, v in json.loads(text).items()}


# -- reading ------------------------------------------------------------------------------------------------
def load_legacy_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, read with ``torch.load(weights_only=True)`` (arbitrary pickles are refused)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path}: no such file (expected NExT-GPT's 7b_tiva_v0 pytorch_model.pt)"
        )
    data = torch_load_weights(path, str(path))
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise WeightsError(
            f"{path} is not a plain tensor checkpoint: expected a flat dict of name -> tensor, "
            f"got {type(data).__name__}"
        )
    return dict(data)


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_legacy_keys(state_dict: Mapping[str, Any], expected: set[str] | None = None) -> None:
    """Refuse unless the key names are exactly those of the released checkpoint; the error lists the difference."""
    expected = set(legacy_key_shapes()) if expected is None else expected
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
        raise WeightsError(
            "not NExT-GPT's 7b_tiva_v0 checkpoint layout (NExT-GPT itself would load it with strict=False and "
            "silently keep random weights): " + "; ".join(parts)
        )


# -- structure ------------------------------------------------------------------------------------------------
@dataclass
class LegacyLayout:
    """Widths read from a legacy checkpoint's tensors (checked against one another)."""

    hidden_size: int
    vocab_size: int
    encoder_dim: int
    num_layers: int
    lora_rank: int
    # (layer, "q_proj") -> (lora_A [r, in], lora_B [out, r])
    lora: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(repr=False)


def inspect_legacy_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> LegacyLayout:
    """Check that the shapes agree with one another (one hidden size, one LoRA rank, ...) and return the widths.

    Key names are checked by :func:`check_legacy_keys`; sizes here are never compared with the full-size
    numbers, so a small test checkpoint with the real key names passes.
    """
    problems: list[str] = []
    embed, head = state_dict[EMBED_KEY], state_dict[HEAD_KEY]
    if embed.ndim != 2 or head.shape != embed.shape:
        problems.append(
            f"embed_tokens {tuple(embed.shape)} and lm_head {tuple(head.shape)} must be equal 2-D"
        )
    hidden = int(embed.shape[-1])
    vocab = int(embed.shape[0])
    if vocab != LEGACY_VOCAB_SIZE:
        problems.append(
            f"embed_tokens has {vocab} rows; the legacy checkpoint has {LEGACY_VOCAB_SIZE} "
            f"({BASE_VOCAB_SIZE} LLaMA-1 tokens + {len(LEGACY_TOKENS)} added)"
        )
    weight, bias = (state_dict[k] for k in INPUT_PROJ_KEYS)
    if weight.ndim != 2 or weight.shape[0] != hidden or tuple(bias.shape) != (hidden,):
        problems.append(
            f"llama_proj weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not map to hidden size {hidden}"
        )
    encoder_dim = int(weight.shape[-1])

    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        m = _LORA_KEY.match(key)
        if m:
            halves.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = tensor
    lora: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    ranks = set()
    for (layer, proj), pair in sorted(halves.items()):
        a, b = pair.get("A"), pair.get("B")
        if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            problems.append(f"layer {layer} {proj}: lora_A/lora_B shapes do not pair up")
            continue
        ranks.add(int(a.shape[0]))
        if proj != "o_proj" and a.shape[1] != hidden:
            problems.append(
                f"layer {layer} {proj}: lora_A reads {a.shape[1]} features, hidden size is {hidden}"
            )
        if proj in ("q_proj", "o_proj") and b.shape[0] != hidden:
            problems.append(
                f"layer {layer} {proj}: lora_B writes {b.shape[0]} features, hidden size is {hidden}"
            )
        lora[(layer, proj)] = (a, b)
    if len(ranks) > 1:
        problems.append(f"LoRA ranks differ between layers: {sorted(ranks)}")
    for modality, prefix in OUTPUT_PREFIXES.items():
        fc = state_dict.get(prefix + "fc.weight")
        if fc is not None and (fc.ndim != 2 or fc.shape[1] != hidden):
            problems.append(
                f"{modality} output projector reads {tuple(fc.shape)[1:]} features, hidden size is {hidden}"
            )
    if problems:
        raise WeightsError("inconsistent legacy checkpoint: " + "; ".join(problems))
    layers = 1 + max(layer for layer, _ in lora) if lora else 0
    return LegacyLayout(hidden, vocab, encoder_dim, layers, ranks.pop() if ranks else 0, lora)


# -- projectors -------------------------------------------------------------------------------------------------
def output_projectors_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], nhead: int = OUTPUT_PROJECTOR_HEADS
) -> dict[str, OutputProjector]:
    """The output projectors under the legacy prefixes (``gen_text_hidden_fcs{,_video,_audio}.0.*``).

    Widths, depths and query counts are read from the tensors; each result is called as
    ``proj(hidden_states, input_embeds)``. Modalities absent from ``state_dict`` are left out.
    """
    out: dict[str, OutputProjector] = {}
    for modality, prefix in OUTPUT_PREFIXES.items():
        sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not sub:
            continue
        try:
            proj = output_projector_from_state_dict(sub, nhead=nhead)
        except (KeyError, RuntimeError, ValueError, AssertionError) as err:
            raise WeightsError(f"{modality} output projector ({prefix}*) does not load: {err}") from None
        out[modality] = proj.eval()
    if not out:
        raise WeightsError(
            f"no output projector keys (expected {', '.join(p + '*' for p in OUTPUT_PREFIXES.values())})"
        )
    return out


def input_projector_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> InputProjector:
    """``llama_proj`` as anygen's linear input projector (one token per input)."""
    weight, bias = (state_dict[k] for k in INPUT_PROJ_KEYS)
    proj = InputProjector("linear", int(weight.shape[1]), int(weight.shape[0]), num_tokens=1)
    proj.load_state_dict({"proj.weight": weight, "proj.bias": bias}, strict=True)
    return proj.eval()


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``B @ A * alpha / r`` in float32 (what peft adds to the frozen weight)."""
    r = lora_a.shape[0]
    return (lora_b.float() @ lora_a.float()) * (alpha / r)


# -- the Vicuna folder ------------------------------------------------------------------------------------------
def check_vicuna_config(vicuna_dir: Path, layout: LegacyLayout | None = None) -> dict[str, Any]:
    """Vicuna-7B v0's ``config.json``, checked: a LLaMA-1 Llama whose widths match the checkpoint."""
    vicuna_dir = Path(vicuna_dir)
    if not vicuna_dir.is_dir():
        raise WeightsError(
            f"--vicuna {vicuna_dir}: not a folder (expected Vicuna-7B v0 in Hugging Face format, made with "
            "FastChat's apply_delta; `anygen weights verify vicuna-7b-v0` shows how)"
        )
    config_path = vicuna_dir / "config.json"
    if not config_path.is_file():
        raise WeightsError(f"--vicuna {vicuna_dir}: no config.json (expected a Hugging Face Llama folder)")
    config = json.loads(config_path.read_text())
    where = f"--vicuna {vicuna_dir}"
    if config.get("model_type") != "llama":
        raise WeightsError(
            f"{where}: model_type is {config.get('model_type')!r}, expected 'llama' (Vicuna-7B v0)"
        )
    vocab = config.get("vocab_size")
    # FastChat's v0 apply_delta adds a [PAD] row to the model (32001) but saves the 32000-token tokenizer;
    # both matrices are replaced by the checkpoint's, so that row is dropped.
    if vocab not in (BASE_VOCAB_SIZE, BASE_VOCAB_SIZE + 1):
        raise WeightsError(
            f"{where}: config.json has vocab_size {vocab}, expected {BASE_VOCAB_SIZE}. {_WRONG_BASE}"
        )
    positions = config.get("max_position_embeddings", config.get("max_sequence_length", 2048))
    if positions > 2048:
        raise WeightsError(
            f"{where}: max_position_embeddings is {positions}; LLaMA-1 has 2048 (4096 is Llama 2, e.g. Vicuna "
            f"v1.5). {_WRONG_BASE}"
        )
    if config.get("tie_word_embeddings", False):
        raise WeightsError(f"{where}: tie_word_embeddings is true; LLaMA has a separate lm_head")
    if layout is not None:
        theirs = (config.get("hidden_size"), config.get("num_hidden_layers"))
        if theirs != (layout.hidden_size, layout.num_layers):
            raise WeightsError(
                f"{where}: hidden_size {theirs[0]} and {theirs[1]} layers, but the checkpoint was trained on "
                f"hidden_size {layout.hidden_size} and {layout.num_layers} layers (Vicuna-7B v0: 4096, 32)"
            )
    return config


def load_vicuna_tokenizer(vicuna_dir: Path):
    """Vicuna's tokenizer with the 38 legacy tokens registered at ids 32000-32037 (checked)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(vicuna_dir, local_files_only=True)
    except Exception as err:
        raise WeightsError(f"--vicuna {vicuna_dir}: cannot load its tokenizer: {err}") from None
    if len(tokenizer) != BASE_VOCAB_SIZE:
        raise WeightsError(
            f"--vicuna {vicuna_dir}: its tokenizer has {len(tokenizer)} tokens, expected {BASE_VOCAB_SIZE}. {_WRONG_BASE}"
        )
    present = [t for t in LEGACY_TOKENS if t in tokenizer.get_vocab()]
    if present:
        raise WeightsError(f"--vicuna {vicuna_dir}: its tokenizer already has {present[:4]}... {_WRONG_BASE}")
    tokenizer.add_tokens(list(LEGACY_TOKENS), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(LEGACY_TOKENS))
    expected = list(range(BASE_VOCAB_SIZE, LEGACY_VOCAB_SIZE))
    encoded = tokenizer("".join(LEGACY_TOKENS), add_special_tokens=False).input_ids
    if ids != expected or list(encoded) != expected:
        raise WeightsError(
            f"--vicuna {vicuna_dir}: the legacy tokens did not get ids {BASE_VOCAB_SIZE}-{LEGACY_VOCAB_SIZE - 1} "
            f"in order (got {ids[:3]}...; encoding gives {list(encoded)[:3]}...)"
        )
    return tokenizer


# -- the pipeline spec ---------------------------------------------------------------------------------------------
def _encoder_node(path: Path | None, base: dict) -> dict:
    if path is None:
        return base
    path = path.expanduser().resolve()
    config = path / "config.json"
    if path.is_dir() and config.is_file():
        kind = json.loads(config.read_text()).get("model_type")
        if kind == "tiny-imagebind":
            return {**base, "type": "tiny-imagebind", "path": str(path), "config": None}
    return {**base, "type": "imagebind", "path": str(path)}


def _generator_node(path: Path | None, base: dict) -> dict:
    if path is None:
        return base
    path = path.expanduser().resolve()
    return {**base, "path": str(path), "config": None if path.exists() else base.get("config")}


def legacy_pipeline_spec(
    out_dir: Path,
    layout: LegacyLayout,
    projectors: Mapping[str, OutputProjector],
    vicuna_config: Mapping[str, Any],
    torch_dtype: str | None,
    imagebind: Path | None = None,
    sd: Path | None = None,
    zeroscope: Path | None = None,
    audioldm: Path | None = None,
    description: str = "",
):
    """The bundled ``nextgpt-7b-v0`` spec with the LLM and projectors in ``out_dir`` (validated, widths included)."""
    from anygen import widths
    from anygen.spec import SPEC_FILENAME, PipelineSpec, load_spec

    data = load_spec("nextgpt-7b-v0").model_dump(mode="json", exclude={"root"})
    if description:
        data["description"] = description
    data["encoders"]["imagebind"] = _encoder_node(imagebind, data["encoders"]["imagebind"])
    data["input_projectors"]["imagebind"]["path"] = "input_projectors/imagebind.safetensors"
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
    )
    llm_config = {"model_type": "llama", **{k: vicuna_config[k] for k in keys if k in vicuna_config}}
    llm_config.update(vocab_size=LEGACY_VOCAB_SIZE, rms_norm_eps=vicuna_config.get("rms_norm_eps", 1e-6))
    llm_config["max_position_embeddings"] = vicuna_config.get("max_position_embeddings", 2048)
    data["llm"].update(path="llm", config=llm_config, torch_dtype=torch_dtype)
    for modality, override in (("image", sd), ("video", zeroscope), ("audio", audioldm)):
        out = data["outputs"][modality]
        out["generator"] = _generator_node(override, out["generator"])
        proj = projectors[modality]
        tfm = proj.tfm
        out["projector"].update(
            type=proj.kind,
            out_dim=proj.out_dim,
            num_queries=proj.num_queries,
            d_model=proj.fc.out_features,
            nhead=tfm.encoder.layers[0].self_attn.num_heads,
            num_encoder_layers=len(tfm.encoder.layers),
            num_decoder_layers=len(tfm.decoder.layers),
            dim_feedforward=tfm.encoder.layers[0].linear1.out_features,
            path=f"outputs/{modality}/projector.safetensors",
        )
    spec = PipelineSpec.from_dict(data, source=str(out_dir / SPEC_FILENAME), root=out_dir)
    enc_width = widths.encoder_output_dim(spec, "imagebind")
    if enc_width != layout.encoder_dim:
        raise WeightsError(
            f"llama_proj reads {layout.encoder_dim}-wide encoder features, but encoders.imagebind "
            f"({spec.encoders['imagebind'].path}) gives {enc_width}-wide vectors"
        )
    return spec


def _check_projector_kind(projectors: Mapping[str, OutputProjector]) -> None:
    for modality, proj in projectors.items():
        if proj.kind != "transformer":
            raise WeightsError(
                f"{modality} output projector is {proj.kind!r}; the legacy layer is a transformer"
            )


# -- conversion -----------------------------------------------------------------------------------------------------
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def convert_nextgpt_legacy(
    checkpoint: str | Path,
    vicuna_dir: str | Path,
    out_dir: str | Path,
    keep_lora: bool = False,
    *,
    lora_alpha: float = DEFAULT_LORA_ALPHA,
    imagebind: str | Path | None = None,
    sd: str | Path | None = None,
    zeroscope: str | Path | None = None,
    audioldm: str | Path | None = None,
    dtype: str = "auto",
    force: bool = False,
    log=print,
) -> Path:
    """Convert ``checkpoint`` (legacy ``pytorch_model.pt``) over ``vicuna_dir`` into ``out_dir``; returns ``out_dir``.

    Default: the LoRA is merged into q/k/v/o (``W += B @ A * lora_alpha / r``) and ``out_dir`` is a complete
    pipeline folder (``pipeline.yaml``). ``keep_lora=True`` writes the unmerged LLM to ``llm-base/`` and the
    LoRA as a peft adapter in ``llm-lora/`` instead (no ``pipeline.yaml``: anygen's spec has no adapter field).
    ``imagebind``/``sd``/``zeroscope``/``audioldm`` override the encoder and generator paths of the spec.
    """
    from anygen.builders import save_module
    from anygen.spec import SPEC_FILENAME

    checkpoint, vicuna_dir, out_dir = Path(checkpoint), Path(vicuna_dir), Path(out_dir)
    if dtype != "auto" and dtype not in _DTYPES:
        raise AnyGenError(f"dtype must be auto or one of {', '.join(_DTYPES)}, got {dtype!r}")
    if lora_alpha <= 0:
        raise AnyGenError(f"lora_alpha must be positive, got {lora_alpha}")
    llm_name = "llm-base" if keep_lora else "llm"
    if not force and any((out_dir / n).exists() for n in (SPEC_FILENAME, "llm", "llm-base", "llm-lora")):
        raise WeightsError(f"--out {out_dir} already holds a converted model (pass --force to overwrite)")

    # 1. Everything is checked before anything is written.
    state = load_legacy_checkpoint(checkpoint)
    check_legacy_keys(state)
    layout = inspect_legacy_checkpoint(state)
    vicuna_config = check_vicuna_config(vicuna_dir, layout)
    tokenizer = load_vicuna_tokenizer(vicuna_dir)
    projectors = output_projectors_from_state_dict(state)
    _check_projector_kind(projectors)
    input_projector = input_projector_from_state_dict(state)

    saved_dtype = (
        dtype
        if dtype != "auto"
        else str(vicuna_config.get("dtype") or vicuna_config.get("torch_dtype") or "float32")
    )
    saved_dtype = (
        saved_dtype if saved_dtype in _DTYPES else None
    )  # None: as stored, and the spec says nothing
    spec = None
    if not keep_lora:
        spec = legacy_pipeline_spec(
            out_dir,
            layout,
            projectors,
            vicuna_config,
            saved_dtype,
            imagebind=Path(imagebind) if imagebind else None,
            sd=Path(sd) if sd else None,
            zeroscope=Path(zeroscope) if zeroscope else None,
            audioldm=Path(audioldm) if audioldm else None,
            description=f"NExT-GPT 7b_tiva_v0 converted by `anygen convert nextgpt-legacy` from {checkpoint.name}",
        )

    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            vicuna_dir, local_files_only=True, dtype=_DTYPES.get(saved_dtype, "auto")
        )
    except Exception as err:
        raise WeightsError(f"--vicuna {vicuna_dir}: cannot load the model: {err}") from None
    targets = {}
    for (layer, proj), (a, b) in layout.lora.items():
        linear = model.get_submodule(f"model.layers.{layer}.self_attn.{proj}")
        if tuple(linear.weight.shape) != (b.shape[0], a.shape[1]):
            raise WeightsError(
                f"layer {layer} {proj}: Vicuna's weight is {tuple(linear.weight.shape)} but the LoRA makes "
                f"{(b.shape[0], a.shape[1])}"
            )
        targets[(layer, proj)] = linear

    # 2. The LLM: new embeddings and head (every row), the tokens, the LoRA merged (or kept).
    model.resize_token_embeddings(LEGACY_VOCAB_SIZE, mean_resizing=False)
    with torch.no_grad():
        for module, key in (
            (model.get_input_embeddings(), EMBED_KEY),
            (model.get_output_embeddings(), HEAD_KEY),
        ):
            module.weight.copy_(state[key].to(module.weight.dtype))
        if not keep_lora:
            for (layer, proj), (a, b) in layout.lora.items():
                weight = targets[(layer, proj)].weight
                weight.copy_((weight.float() + lora_delta(a, b, lora_alpha)).to(weight.dtype))
    model.config.vocab_size = LEGACY_VOCAB_SIZE
    out_dir.mkdir(parents=True, exist_ok=True)
    log(
        f"writing {out_dir / llm_name} (Vicuna-7B v0 + NExT-GPT: {len(LEGACY_TOKENS)} tokens, "
        f"LoRA r={layout.lora_rank} alpha={lora_alpha:g} {'kept separate' if keep_lora else 'merged'})"
    )
    model.save_pretrained(out_dir / llm_name)
    tokenizer.save_pretrained(out_dir / llm_name)
    if keep_lora:
        write_peft_adapter(out_dir / "llm-lora", layout, lora_alpha, base=out_dir / llm_name)

    # 3. Projectors and the spec.
    save_module(input_projector, out_dir / "input_projectors" / "imagebind.safetensors")
    for modality, proj in projectors.items():
        save_module(proj, out_dir / "outputs" / modality / "projector.safetensors")
    if spec is not None:
        (out_dir / SPEC_FILENAME).write_text(spec.to_yaml())
        log(f"wrote {out_dir / SPEC_FILENAME}: AnyToAnyPipeline.from_pretrained({str(out_dir)!r})")
    else:
        log(
            f"wrote the LoRA as a peft adapter in {out_dir / 'llm-lora'} over {out_dir / llm_name}; no "
            f"{SPEC_FILENAME} (convert without --keep-lora for a runnable pipeline)"
        )
    return out_dir


def write_peft_adapter(
    folder: Path, layout: LegacyLayout, lora_alpha: float, base: Path | None = None
) -> Path:
    """The LoRA as a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for (layer, proj), (a, b) in layout.lora.items():
        stem = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
        tensors[f"{stem}.lora_A.weight"] = a.detach().contiguous()
        tensors[f"{stem}.lora_B.weight"] = b.detach().contiguous()
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base) if base is not None else None,
        "r": layout.lora_rank,
        "lora_alpha": lora_alpha,
        "lora_dropout": LORA_DROPOUT,
        "target_modules": list(LORA_TARGETS),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "init_lora_weights": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
