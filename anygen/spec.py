"""Pipeline specs: the declarative graph in ``pipelines/*.yaml``, validated before any weights load.

A spec names every node of the graph and its edges:

* ``encoders.<name>``: media -> one vector per input (``type`` + ``config`` or ``path``);
* ``input_projectors.<name>``: ``encoder: <name>`` (the edge) -> LLM embeddings;
* ``llm``: a transformers causal LM, its tokenizer and prompt template;
* ``outputs.<modality>``: the signal tokens, the output projector (LLM -> generator) and the generator.

Every width that meets another node's width is checked here, and errors name both nodes and widths.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from anygen import hub
from anygen.errors import SpecError, WeightsError

MODALITIES = ("image", "video", "audio")
SPEC_FILENAME = "pipeline.yaml"


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Provenance(_Node):
    """Where a node's weights came from and their licence, for the model card (``save_pretrained`` records
    them, so they survive saving a saved pipeline again; see :mod:`anygen.model_card`)."""

    source: str | None = Field(None, description="where the weights came from (model card)")
    license: str | None = Field(None, description="the weights' licence (model card)")


class WeightedNode(_Provenance):
    """A node built either from ``config`` (random weights from ``seed``) or loaded from ``path``."""

    type: str
    config: dict[str, Any] | None = None
    path: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _config_or_path(self) -> WeightedNode:
        if self.config is None and self.path is None:
            raise ValueError("needs either 'config' (build with random weights) or 'path' (load weights)")
        return self


class EncoderSpec(WeightedNode):
    """One pooled vector per input (``tiny-imagebind``, ``imagebind``, ``clip``, ``clap``) or a fixed number of
    tokens per input (``*-tokens``, see :mod:`anygen.encoders.token_configs`; with ``path``, ``config`` may hold
    their settings)."""

    type: Literal[
        "tiny-imagebind",
        "imagebind",
        "clip",
        "clap",
        "clip-vision-tokens",
        "siglip-vision-tokens",
        "whisper-audio-tokens",
    ]
    modalities: list[Literal["image", "video", "audio"]] = list(MODALITIES)

    @model_validator(mode="after")
    def _token_encoder_modalities(self) -> EncoderSpec:
        """A token encoder that lists no modalities takes those its type encodes (image and video, or audio)."""
        if self.type.endswith("-tokens") and "modalities" not in self.model_fields_set:
            from anygen.encoders.token_configs import config_class

            self.modalities = list(config_class(self.type).MODALITIES)
        return self


#: Fields only a ``resampler`` input projector takes (left out of the other types' dumps).
_RESAMPLER_FIELDS = ("d_model", "nhead", "num_layers")


class InputProjectorSpec(_Provenance):
    """Encoder output -> LLM embeddings. ``linear`` / ``mlp``: one pooled vector -> ``num_tokens`` (default 1);
    ``mlp-tokens``: every encoder token -> one embedding (``num_tokens`` is the encoder's count, filled in when
    the spec is checked); ``resampler``: ``num_tokens`` learned queries (required) read the encoder's tokens."""

    type: Literal["linear", "mlp", "mlp-tokens", "resampler"]
    encoder: str
    num_tokens: int | None = Field(None, ge=1, description="the LLM embeddings each input becomes")
    d_model: int | None = Field(None, ge=1, description="resampler: query width (default: the encoder's width)")
    nhead: int = Field(4, ge=1, description="resampler: attention heads")
    num_layers: int = Field(2, ge=1, description="resampler: cross-attention layers")
    path: str | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _tokens_and_options(self) -> InputProjectorSpec:
        if self.type != "resampler":
            given = [f for f in _RESAMPLER_FIELDS if f in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)}: only a resampler takes it (this projector is {self.type!r})")
        if self.type in ("linear", "mlp") and self.num_tokens is None:
            self.num_tokens = 1
        if self.type == "resampler" and self.num_tokens is None:
            raise ValueError("num_tokens: a resampler needs its number of queries (the tokens each input becomes)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        data = handler(self)
        if self.type != "resampler" and isinstance(data, dict):
            for key in _RESAMPLER_FIELDS:
                data.pop(key, None)
        return data


class TemplateSpec(_Node):
    """How a conversation becomes the LLM's prompt. ``{content}`` is the turn's text."""

    system: str = ""
    user: str = "### Human: {content}\n### Assistant:"
    assistant: str = " {content}\n"
    system_turn: str | None = Field(
        "{content}\n",
        description="how a system message (chat messages with role 'system') is written in place of `system`; "
        "null: this template takes none",
    )
    media: dict[str, tuple[str, str]] = Field(
        default_factory=lambda: {m: ("<Img>", "</Img>") for m in MODALITIES},
        description="text placed before and after each input's projected features, per modality",
    )
    stop: list[str] = Field(default_factory=lambda: ["###"])

    @field_validator("user", "assistant", "system_turn")
    @classmethod
    def _has_content(cls, value: str | None) -> str | None:
        if value is not None and "{content}" not in value:
            raise ValueError(f"must contain {{content}} (where the turn's text goes), got {value!r}")
        return value


#: The names ``llm.template`` may give instead of a mapping of patterns.
TEMPLATE_NAMES = ("nextgpt-legacy", "chat")


class ChatTemplateSpec(_Node):
    """The LLM tokenizer's own chat template (``template: chat``); or, for a spec that gives no template
    (``type: auto``), that chat template when the tokenizer has one, else ``nextgpt-legacy``.

    Which one, and the tokenizer that renders it, are known once the LLM is built
    (:func:`anygen.chat_template.bind_template` binds them here).
    """

    type: Literal["chat", "auto"] = "chat"
    media: dict[str, tuple[str, str]] = Field(
        default_factory=lambda: {m: ("<Img>", "</Img>") for m in MODALITIES},
        description="text placed before and after each input's projected features, per modality",
    )
    #: A :class:`TemplateSpec` (``auto``, no chat template) or an :class:`anygen.chat_template.ChatTemplate`.
    _bound: Any = PrivateAttr(None)

    def bind(self, resolved: Any) -> None:
        self._bound = resolved

    @property
    def resolved(self) -> Any:
        """The template in use; :class:`~anygen.errors.AnyGenError` before the LLM is built."""
        if self._bound is None:
            from anygen.errors import AnyGenError

            raise AnyGenError(
                "llm.template: the prompt template is read from the LLM's tokenizer; build the LLM first "
                "(pipe.llm)"
            )
        return self._bound

    @property
    def system_turn(self) -> str | None:
        """A chat template writes system messages itself (one that takes none refuses them when rendered)."""
        return self._bound.system_turn if isinstance(self._bound, TemplateSpec) else "{content}"

    @property
    def stop(self) -> list[str]:
        """Stop strings (a chat template's answers end at its end-of-turn token, which decoding stops at)."""
        return list(self._bound.stop) if self._bound is not None else []

    @model_serializer
    def _dump(self, info: SerializationInfo) -> Any:
        """As a spec writes it: the legacy patterns once ``auto`` found no chat template, ``chat`` (a mapping
        when ``media`` is not the default), or null (``auto`` not yet resolved)."""
        if isinstance(self._bound, TemplateSpec):
            return self._bound.model_dump(mode=info.mode)
        if self.type == "auto" and self._bound is None:
            return None
        if self.media == ChatTemplateSpec().media:
            return "chat"
        return {"type": "chat", "media": {m: list(pair) for m, pair in self.media.items()}}


class TokenizerSpec(_Node):
    type: Literal["byte-level", "pretrained"] = "pretrained"


class LLMSpec(WeightedNode):
    type: Literal["causal-lm"]
    adapter: str | None = Field(None, description="a peft (LoRA) adapter folder applied over the weights")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    hidden_layer: int = -1
    template: SerializeAsAny[TemplateSpec | ChatTemplateSpec] = Field(
        default_factory=lambda: ChatTemplateSpec(type="auto"),
        description="a mapping of patterns, 'nextgpt-legacy' (NExT-GPT's patterns) or 'chat' (the tokenizer's "
        "chat template); none: the tokenizer's chat template when it has one, else 'nextgpt-legacy'",
    )
    torch_dtype: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict, description="max_new_tokens, temperature, top_p")

    @field_validator("template", mode="wrap")
    @classmethod
    def _template(cls, value: Any, handler: Any, info: ValidationInfo) -> TemplateSpec | ChatTemplateSpec:
        """A name, a mapping of patterns, or ``{type: chat, media: ...}``; null is the default."""
        if value is None:
            return ChatTemplateSpec(type="auto")
        if isinstance(value, (TemplateSpec, ChatTemplateSpec)):
            template = value
        elif isinstance(value, str):
            if value not in TEMPLATE_NAMES:
                names = ", ".join(TEMPLATE_NAMES)
                raise ValueError(f"unknown template {value!r}: give a mapping of patterns or one of {names}")
            template = TemplateSpec() if value == "nextgpt-legacy" else ChatTemplateSpec()
        elif isinstance(value, dict) and "type" in value:
            if value["type"] != "chat":
                raise ValueError(f"type: {value['type']!r}; only 'chat' (a mapping of patterns has no type)")
            template = ChatTemplateSpec.model_validate(value)
        else:
            template = TemplateSpec.model_validate(value)
        tokenizer = info.data.get("tokenizer")
        if (
            isinstance(template, ChatTemplateSpec)
            and template.type == "chat"
            and info.data.get("path") is None
            and tokenizer is not None
            and tokenizer.type == "byte-level"
        ):
            raise ValueError(
                "'chat' uses the tokenizer's own chat template, but the byte-level tokenizer "
                "(llm.tokenizer.type) has none; give 'nextgpt-legacy' or a mapping of patterns"
            )
        return template


class SignalTokensSpec(_Node):
    """``count`` tokens named ``format.format(i=0..count-1)``, e.g. ``[IMG0]..[IMG3]``."""

    count: int = Field(ge=1)
    format: str

    @field_validator("format")
    @classmethod
    def _has_index(cls, value: str) -> str:
        try:  # '{i}' or with a format spec, e.g. '<image_{i:05d}>' (NExT-GPT's newer names)
            distinct = value.format(i=0) != value.format(i=1)
        except (KeyError, IndexError, ValueError):
            distinct = False
        if not distinct:
            raise ValueError("must contain '{i}' (the token index), e.g. '[IMG{i}]' or '<image_{i:05d}>'")
        return value

    def names(self) -> list[str]:
        return [self.format.format(i=i) for i in range(self.count)]


class ConditionHeadSpec(_Node):
    """What an output projector head declares for one conditioning tensor (checked against the generator's)."""

    out_dim: int | None = Field(None, ge=1)
    num_queries: int | None = Field(None, ge=1)


class OutputProjectorSpec(_Provenance):
    type: Literal["linear", "mlp", "transformer"]
    out_dim: int | None = Field(None, ge=1, description="defaults to the generator's conditioning width")
    num_queries: int | None = Field(None, ge=1, description="defaults to the generator's conditioning tokens")
    d_model: int = Field(512, ge=1)
    nhead: int = Field(4, ge=1)
    num_encoder_layers: int = Field(4, ge=1)
    num_decoder_layers: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1, description="defaults to 4 * d_model, as NExT-GPT")
    tensors: dict[str, ConditionHeadSpec] = Field(
        default_factory=dict,
        description="for a generator conditioned on several tensors: the head of each (default: the tensor's shape)",
    )
    path: str | None = None
    seed: int = 0


class GeneratorSpec(WeightedNode):
    type: str = Field(description="a generator type (anygen.generators.GENERATOR_MODALITIES)")
    torch_dtype: str | None = None
    cpu_offload: bool = False
    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from anygen.generators.shapes import GENERATOR_MODALITIES

        if value not in GENERATOR_MODALITIES:
            raise ValueError(f"unknown generator type {value!r}; known: {', '.join(sorted(GENERATOR_MODALITIES))}")
        return value

    unload_after_use: bool = Field(
        False, description="free the generator after each call that used it (rebuilt on the next): one GPU, big models"
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="call options, e.g. num_inference_steps"
    )


class OutputSpec(_Node):
    signal_tokens: SignalTokensSpec
    projector: OutputProjectorSpec
    generator: GeneratorSpec


class PipelineSpec(_Node):
    name: str
    description: str = ""
    encoders: dict[str, EncoderSpec] = Field(default_factory=dict)
    input_projectors: dict[str, InputProjectorSpec] = Field(default_factory=dict)
    llm: LLMSpec
    outputs: dict[Literal["image", "video", "audio"], OutputSpec] = Field(default_factory=dict)
    examples: list[str] = Field(
        default_factory=list, description="prompts this pipeline answers well (the demo offers them)"
    )
    root: Path | None = Field(None, exclude=True, description="folder that relative paths are read from")
    #: The Hugging Face cache that Hub ids in node paths are read from (None: huggingface_hub's default).
    _cache_dir: Path | None = PrivateAttr(None)
    #: The Hub repo (and revision) this spec was loaded from, when it was (for the model card).
    _hub_source: hub.HubRef | None = PrivateAttr(None)
    #: Hub node paths already fetched: path text -> local path (each is looked up on the Hub once).
    _hub_paths: dict[str, Path] = PrivateAttr(default_factory=dict)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not self.examples:
            data.pop("examples", None)  # specs without examples dump as before
        return data

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls, data: Any, *, source: str = "spec", root: Path | None = None, cache_dir: str | Path | None = None
    ) -> PipelineSpec:
        """Validate ``data``; ``cache_dir`` is the Hugging Face cache for Hub ids in node paths. Nothing is
        downloaded here: a Hub path's widths come from its cached copy, else from the node's ``config``."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            spec = cls.model_validate({**data, "root": root})
        except ValidationError as err:
            raise SpecError(f"{source}: invalid pipeline spec:\n{format_validation_error(err)}") from None
        spec._cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        with hub.no_downloads():
            try:
                spec._check_graph(source)
            except SpecError as err:
                hints = spec._uncached_hub_hints()
                if not hints:
                    raise
                raise SpecError(f"{err}\n" + "\n".join(hints)) from None
        return spec

    @classmethod
    def from_file(cls, path: str | Path, *, cache_dir: str | Path | None = None) -> PipelineSpec:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"pipeline spec {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise SpecError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(data, source=str(path), root=path.parent, cache_dir=cache_dir)

    @property
    def hub_source(self) -> hub.HubRef | None:
        """The Hub repo and revision this spec was loaded from (None when it came from a file or a name)."""
        return self._hub_source

    def node_paths(self) -> dict[str, str | None]:
        """Every node's ``path`` as written, by dotted node name (``encoders.imagebind``, ``llm``,
        ``outputs.image.generator``, ...)."""
        paths: dict[str, str | None] = {f"encoders.{n}": e.path for n, e in self.encoders.items()}
        paths.update({f"input_projectors.{n}": p.path for n, p in self.input_projectors.items()})
        paths["llm"] = self.llm.path
        paths["llm.adapter"] = self.llm.adapter
        for modality, out in self.outputs.items():
            paths[f"outputs.{modality}.projector"] = out.projector.path
            paths[f"outputs.{modality}.generator"] = out.generator.path
        return paths

    def _uncached_hub_hints(self) -> list[str]:
        """For a failed validation: each node whose path is a Hub id that is not cached, and how to fetch it."""
        hints = []
        for node, path in self.node_paths().items():
            ref = self._hub_ref(path) if path else None
            if ref is None or self.resolve(path).exists():
                continue
            patterns = [ref.subfolder, f"{ref.subfolder}/*"] if ref.subfolder else None
            hints.append(
                f"  {node}.path {path!r} is read as Hub id {ref} (no such path under {self.root}), which is not in "
                "the local cache, so its widths come from its config; declare them there, or fetch it first: "
                + hub.fetch_command(ref.repo_id, ref.revision, self._cache_dir, patterns)
            )
        return hints

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"root"}), sort_keys=False)

    def resolve(self, path: str | None) -> Path | None:
        """A node's ``path``: ``${weights}`` and ``${bundled_weights}`` expanded, relative to the spec's folder
        unless absolute; a Hub id (see :meth:`_hub_ref`) becomes the folder of its cached copy, fetched now
        (only that subfolder) unless in :func:`anygen.hub.no_downloads` (as while a spec is validated)."""
        if path is None:
            return None
        ref = self._hub_ref(path)
        if ref is None:
            return self._local(self._expand(path))
        if path in self._hub_paths:
            return self._hub_paths[path]
        try:
            resolved = hub.node_path(ref, cache_dir=self._cache_dir, error=WeightsError)
        except WeightsError as err:
            if path.startswith(hub.HUB_PREFIX):
                raise
            raise WeightsError(
                f"path {path!r} is not under {self.root}, and read as a Hub id: {err}"
            ) from None
        if hub.downloads_allowed():  # a cache-only look-up is redone when downloads are allowed
            self._hub_paths[path] = resolved
        return resolved

    def _hub_ref(self, path: str) -> hub.HubRef | None:
        """``path`` as a Hub id, or None. ``hf://...`` always is one; a bare ``org/name[/subfolder]`` only when
        no file or folder of that name exists under the spec's folder (so ``llm`` or
        ``outputs/image/generator`` in a saved pipeline stay local); ``${weights}/...``, absolute and
        ``./``-relative paths never are."""
        expanded = self._expand(path)
        ref = hub.parse_node_path(expanded)
        if ref is None or expanded.startswith(hub.HUB_PREFIX):
            return ref
        return None if self._local(expanded).exists() else ref

    @staticmethod
    def _expand(path: str) -> str:
        return path.replace("${weights}", str(weights_dir())).replace(
            "${bundled_weights}", str(bundled_weights_dir())
        )

    def _local(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.root is None else self.root / p

    # -- graph checks (no weights are loaded) ---------------------------------------------------------
    def _check_heads(self, source: str, node: str, out: OutputSpec, layout) -> None:
        """A generator with several conditioning tensors: one projector head each, widths and tokens matching."""
        proj, gen = out.projector, f"{node}.generator ({out.generator.type})"
        if proj.out_dim is not None or proj.num_queries is not None:
            raise SpecError(
                f"{source}: {node}.projector: {gen} is conditioned on several tensors ({layout.describe()}); "
                f"declare each head under {node}.projector.tensors.<name> instead of out_dim / num_queries"
            )
        unknown = sorted(set(proj.tensors) - set(layout.names))
        if unknown:
            raise SpecError(
                f"{source}: {node}.projector.tensors: {', '.join(unknown)} is not a conditioning tensor of {gen}; "
                f"it takes {layout.describe()}"
            )
        if proj.type == "transformer" and proj.d_model % proj.nhead:
            raise SpecError(f"{source}: {node}.projector.nhead={proj.nhead} does not divide d_model={proj.d_model}")
        for t in layout.tensors:
            head = proj.tensors.get(t.name) or ConditionHeadSpec()
            where = f"{node}.projector.tensors.{t.name}"
            if head.out_dim is not None and head.out_dim != t.width:
                raise SpecError(
                    f"{source}: {where} gives {head.out_dim}-wide vectors but {gen} is conditioned on {t.name} "
                    f"{t.width} wide ({t.describe()})"
                )
            queries = head.num_queries
            if proj.type != "transformer" and not t.pooled:
                queries = out.signal_tokens.count  # one output per signal token
            if not t.pooled and queries is not None and queries != t.tokens:
                raise SpecError(
                    f"{source}: {where} gives {queries} tokens but {gen} is conditioned on {t.name} of {t.tokens} "
                    f"tokens" + ("" if proj.type == "transformer" else f" (a {proj.type!r} projector gives one per "
                                 "signal token: use type transformer)")
                )
            if t.pooled and head.num_queries not in (None, 1) and proj.type == "transformer":
                raise SpecError(f"{source}: {where}: {t.name} is one pooled vector; num_queries must be 1")

    def _check_graph(self, source: str) -> None:
        for name, proj in self.input_projectors.items():
            if proj.encoder not in self.encoders:
                raise SpecError(
                    f"{source}: input_projectors.{name}.encoder names {proj.encoder!r}, "
                    f"which is not among the encoders {sorted(self.encoders)}"
                )
        served: dict[str, str] = {}
        for name, enc in self.encoders.items():
            if not any(p.encoder == name for p in self.input_projectors.values()):
                raise SpecError(
                    f"{source}: encoders.{name} has no input projector (add one with encoder: {name})"
                )
            for modality in enc.modalities:
                if modality in served:
                    raise SpecError(
                        f"{source}: modality {modality!r} is served by both encoders.{served[modality]} "
                        f"and encoders.{name}"
                    )
                served[modality] = name
        names = [t for out in self.outputs.values() for t in out.signal_tokens.names()]
        if len(set(names)) != len(names):
            raise SpecError(f"{source}: signal token names repeat across outputs: {names}")
        self._check_widths(source)
        self._check_defaults(source)

    def _check_defaults(self, source: str) -> None:
        """``llm.defaults`` and each generator's ``defaults``: known keys only, values by the call options' rules
        (so ``anygen info`` and loading a spec catch what would otherwise fail at generation)."""
        from anygen import widths
        from anygen.options import check_spec_defaults

        try:
            check_spec_defaults(self, {m: widths.generator_geometry(self, m) for m in self.outputs})
        except SpecError as err:
            raise SpecError(f"{source}: {err}") from None

    def _check_widths(self, source: str) -> None:
        from anygen import widths

        # Widths read from configs (or declared); unreadable ones fail here, before any weights load.
        widths.llm_hidden_size(self)
        self._check_llm_heads_and_layer(source)
        self._check_inputs(source)
        for modality, out in self.outputs.items():
            layout = widths.generator_layout(self, modality)
            node = f"outputs.{modality}"
            if layout.packed:
                self._check_heads(source, node, out, layout)
                continue
            if out.projector.tensors:
                raise SpecError(
                    f"{source}: {node}.projector.tensors: {node}.generator ({out.generator.type}) is conditioned on "
                    f"one tensor ({layout.describe()}); give out_dim / num_queries instead"
                )
            tokens, width = layout.shape
            if out.projector.out_dim is not None and out.projector.out_dim != width:
                raise SpecError(
                    f"{source}: {node}.projector gives {out.projector.out_dim}-wide vectors but "
                    f"{node}.generator ({out.generator.type}) is conditioned on {width}-wide vectors"
                )
            if out.projector.type == "transformer" and out.projector.d_model % out.projector.nhead:
                raise SpecError(
                    f"{source}: {node}.projector.nhead={out.projector.nhead} does not divide "
                    f"{node}.projector.d_model={out.projector.d_model}: each attention head gets d_model / nhead "
                    "dimensions, so d_model must be a multiple of nhead"
                )
            queries = out.projector.num_queries
            if out.projector.type != "transformer":
                if queries is not None and queries != out.signal_tokens.count:
                    raise SpecError(
                        f"{source}: {node}.projector is {out.projector.type!r} (one output per signal token), "
                        f"so num_queries must equal {node}.signal_tokens.count={out.signal_tokens.count}"
                    )
                queries = out.signal_tokens.count
            if queries is not None and queries != tokens:
                raise SpecError(
                    f"{source}: {node}.projector gives {queries} tokens but {node}.generator "
                    f"({out.generator.type}) is conditioned on {tokens} tokens"
                )

    def _check_inputs(self, source: str) -> None:
        """Encoder -> input projector -> LLM: a pooled vector meets a pooled-vector projector and a token sequence
        a sequence projector; ``mlp-tokens`` gets (or must match) the encoder's token count; the widths in a
        sequence projector's weights file; the tokens of one input fit in the LLM's context."""
        from anygen import widths

        hidden, window = widths.llm_hidden_size(self), widths.llm_context(self)
        for name, proj in self.input_projectors.items():
            enc = self.encoders[proj.encoder]
            node, what = f"input_projectors.{name} ({proj.type})", f"encoders.{proj.encoder} ({enc.type})"
            width = widths.encoder_output_dim(self, proj.encoder)
            tokens = widths.encoder_tokens(self, proj.encoder)
            if tokens is None:
                if proj.type in ("mlp-tokens", "resampler"):
                    raise SpecError(
                        f"{source}: {node} reads a token sequence, but {what} gives one pooled {width}-wide vector "
                        "per input: use type linear or mlp (num_tokens: several embeddings), or a *-tokens encoder"
                    )
            else:
                foreign = [m for m in enc.modalities if m not in tokens]
                if foreign:
                    raise SpecError(
                        f"{source}: encoders.{proj.encoder}.modalities lists {foreign}, but {enc.type} encodes "
                        f"{sorted(tokens)} only"
                    )
                shape = widths.encoder_output_text(self, proj.encoder)
                counts = {tokens[m] for m in enc.modalities}
                if proj.type in ("linear", "mlp"):
                    raise SpecError(
                        f"{source}: {node} maps one pooled vector per input, but {what} gives a token sequence "
                        f"({shape}): use type mlp-tokens or resampler"
                    )
                if proj.type == "mlp-tokens":
                    if len(counts) > 1:
                        raise SpecError(
                            f"{source}: {node} gives one embedding per encoder token, but {what} gives {shape}, and "
                            "one projector gives one count per input: use a resampler, video_tokens: mean, or one "
                            "encoder per modality"
                        )
                    if proj.num_tokens is not None and proj.num_tokens not in counts:
                        raise SpecError(
                            f"{source}: input_projectors.{name}.num_tokens={proj.num_tokens}, but an mlp-tokens "
                            f"projector gives one embedding per token of {what}: {shape}"
                        )
                    proj.num_tokens = counts.pop()  # the count the prompt reserves per input
            if proj.type == "resampler" and (proj.d_model or width) % proj.nhead:
                raise SpecError(
                    f"{source}: input_projectors.{name}.nhead={proj.nhead} does not divide its d_model="
                    f"{proj.d_model or width}" + ("" if proj.d_model else f" (the width of {what})")
                )
            if proj.type in ("mlp-tokens", "resampler"):
                self._check_input_weights(source, name, width, hidden)
            if window is not None and proj.num_tokens + 2 > window:
                raise SpecError(
                    f"{source}: {node} puts {proj.num_tokens} embeddings per input into the prompt, but the LLM's "
                    f"context (max_position_embeddings) is {window} positions, which must also hold the BOS and "
                    "the answer: use fewer tokens (a resampler's num_tokens, pooling) or an LLM with a longer context"
                )

    def _check_input_weights(self, source: str, name: str, width: int, hidden: int) -> None:
        """A sequence projector's weights file (read: its header only) against the widths the graph gives it."""
        proj = self.input_projectors[name]
        try:
            path = self.resolve(proj.path) if proj.path else None
        except WeightsError:
            return  # a Hub file not in the cache: nothing to read yet
        if path is None or not path.is_file():
            return  # nothing to check yet; loading says what is missing
        import torch
        from safetensors import SafetensorError, safe_open

        from anygen.projectors import make_input_projector

        with torch.device("meta"):
            module = make_input_projector(
                proj.type,
                width,
                hidden,
                proj.num_tokens or 1,
                d_model=proj.d_model,
                nhead=proj.nhead,
                num_layers=proj.num_layers,
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                names = f.keys()
                found = {k: tuple(f.get_slice(k).get_shape()) for k in names}
        except (OSError, SafetensorError):
            return  # not readable: loading reports it
        for key, tensor in module.state_dict().items():
            if key in found and found[key] != tuple(tensor.shape):
                raise SpecError(
                    f"{source}: input_projectors.{name} ({proj.type}): its weights {proj.path} hold {key} of shape "
                    f"{found[key]}, but from encoders.{proj.encoder} ({width}-wide tokens) to the llm (hidden "
                    f"{hidden}) it is {tuple(tensor.shape)}: the weights were made for other widths"
                )

    def _check_llm_heads_and_layer(self, source: str) -> None:
        """Attention heads that divide the LLM's width, and ``hidden_layer`` within its layers."""
        from anygen import widths

        where, size = widths.llm_shape(self)
        hidden, heads, kv = size["hidden_size"], size["num_attention_heads"], size["num_key_value_heads"]
        if hidden and heads and size["head_dim"] is None and hidden % heads:
            raise SpecError(
                f"{source}: {where}: num_attention_heads={heads} does not divide hidden_size={hidden} "
                "(give a hidden_size that is a multiple of the head count, or head_dim)"
            )
        if heads and kv and heads % kv:
            raise SpecError(
                f"{source}: {where}: num_key_value_heads={kv} does not divide num_attention_heads={heads}"
            )
        layers = size["num_hidden_layers"]
        if layers is not None and not -(layers + 1) <= self.llm.hidden_layer <= layers:
            raise SpecError(
                f"{source}: llm.hidden_layer={self.llm.hidden_layer} is out of range: the LLM has {layers} layers "
                f"({where}: num_hidden_layers), so hidden_layer must be in {-(layers + 1)}..{layers} "
                "(-1: the last layer's output, 0: the embeddings)"
            )


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: the dotted field path and what is wrong with it."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "missing field"
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", msg))
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def weights_dir() -> Path:
    """Where checkpoints live: ``$ANYGEN_WEIGHTS``, else ``weights/`` of a source checkout, else a user cache."""
    import os

    if os.environ.get("ANYGEN_WEIGHTS"):
        return Path(os.environ["ANYGEN_WEIGHTS"]).expanduser()
    checkout = Path(__file__).resolve().parents[1] / "weights"
    if (checkout / "README.md").is_file():
        return checkout
    return Path.home() / ".cache" / "anygen" / "weights"


def bundled_weights_dir() -> Path:
    """Weights shipped inside the package (``weights/`` in the repo, packaged as ``anygen.bundled_weights``)."""
    return Path(str(resources.files("anygen.bundled_weights")))


#: The pipeline used when none is named: the trained `mini`. ``$ANYGEN_PIPELINE`` names another (the test suite
#: sets ``tiny``, the random-weight wiring pipeline, to stay fast).
DEFAULT_PIPELINE = "mini"


def default_pipeline() -> str:
    """``$ANYGEN_PIPELINE`` when set, else :data:`DEFAULT_PIPELINE`."""
    import os

    return os.environ.get("ANYGEN_PIPELINE") or DEFAULT_PIPELINE


# -- finding specs ------------------------------------------------------------------------------------
def bundled_pipelines() -> dict[str, Path]:
    """Bundled spec names -> files (``pipelines/*.yaml`` in the repo, packaged as ``anygen.bundled_pipelines``)."""
    folder = resources.files("anygen.bundled_pipelines")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def load_spec(
    name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> PipelineSpec:
    """A spec from a bundled name (``"tiny"``), a ``.yaml`` file, a folder holding ``pipeline.yaml``, or a Hub
    repo id (``"org/name"``) whose snapshot holds one.

    Precedence: a bundled name wins over a file or folder of the same name in the working directory
    (``./tiny``, an absolute path or a :class:`~pathlib.Path` object means the folder); an existing file or
    folder wins over a Hub id; ``org/name`` (two parts, no ``./``, ``~`` or ``/`` in front, no ``.yaml``) is a
    Hub id. A Hub repo is fetched whole with ``huggingface_hub`` at ``revision`` (default: its main branch) into
    ``cache_dir`` (default: the Hugging Face cache); with ``HF_HUB_OFFLINE=1`` only the cache is read.
    ``cache_dir`` is also where Hub ids in the spec's node paths are read from (when their nodes are built).
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    if not _path_like(name_or_path) and str(name_or_path) in bundled_pipelines():
        _no_revision(revision, name_or_path, "a bundled pipeline")
        return PipelineSpec.from_file(bundled_pipelines()[str(name_or_path)], cache_dir=cache)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / SPEC_FILENAME).is_file():
            raise SpecError(f"{str(path)!r} is a folder without {SPEC_FILENAME}: not a saved anygen pipeline")
        _no_revision(revision, name_or_path, "a local folder")
        return PipelineSpec.from_file(path / SPEC_FILENAME, cache_dir=cache)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        _no_revision(revision, name_or_path, "a local file")
        return PipelineSpec.from_file(path, cache_dir=cache)
    if hub.is_repo_id(name_or_path):
        return _load_hub_spec(str(name_or_path), revision, cache)
    bundled = bundled_pipelines()
    if str(name_or_path) in bundled:
        _no_revision(revision, name_or_path, "a bundled pipeline")
        return PipelineSpec.from_file(bundled[str(name_or_path)], cache_dir=cache)
    raise SpecError(
        f"unknown pipeline {str(name_or_path)!r}: not a bundled pipeline ({', '.join(sorted(bundled))}), "
        "a .yaml spec file, a folder saved with save_pretrained, or a Hub repo id (org/name)"
    )


def _no_revision(revision: str | None, name_or_path: str | Path, kind: str) -> None:
    if revision is not None:
        raise SpecError(
            f"revision={revision!r} applies to Hub repo ids (org/name) only, but {str(name_or_path)!r} is {kind}"
        )


def _load_hub_spec(repo_id: str, revision: str | None, cache_dir: Path | None) -> PipelineSpec:
    """The spec of a pipeline saved in Hub repo ``repo_id`` (its snapshot, fetched whole, is the spec's root)."""
    folder = hub.snapshot(repo_id, revision=revision, cache_dir=cache_dir, error=SpecError)
    if not (folder / SPEC_FILENAME).is_file():
        raise SpecError(
            f"Hub repo {repo_id!r} (revision {revision or 'main'!r}) has no {SPEC_FILENAME}: not a pipeline saved "
            "by anygen (AnyToAnyPipeline.save_pretrained / push_to_hub)"
        )
    spec = PipelineSpec.from_file(folder / SPEC_FILENAME, cache_dir=cache_dir)
    spec._hub_source = hub.HubRef(repo_id, revision)
    return spec


def _path_like(name_or_path: str | Path) -> bool:
    """A Path object, or a string that spells a path (``./tiny``, ``dir/x``, ``~/x``, ``/abs``, ``x.yaml``)."""
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    return "/" in text or "\\" in text or text.startswith((".", "~")) or text.endswith((".yaml", ".yml"))


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON config file, with an error naming ``what`` it was for."""
    if not path.is_file():
        from anygen.errors import WeightsError

        raise WeightsError(f"{what}: {path} is missing")
    return json.loads(path.read_text())
