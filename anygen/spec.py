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
    ValidationError,
    field_validator,
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
    type: Literal["tiny-imagebind", "imagebind", "clip", "clap"]
    modalities: list[Literal["image", "video", "audio"]] = list(MODALITIES)


class InputProjectorSpec(_Provenance):
    type: Literal["linear", "mlp"]
    encoder: str
    num_tokens: int = Field(1, ge=1)
    path: str | None = None
    seed: int = 0


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


class TokenizerSpec(_Node):
    type: Literal["byte-level", "pretrained"] = "pretrained"


class LLMSpec(WeightedNode):
    type: Literal["causal-lm"]
    adapter: str | None = Field(None, description="a peft (LoRA) adapter folder applied over the weights")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    hidden_layer: int = -1
    template: TemplateSpec = Field(default_factory=TemplateSpec)
    torch_dtype: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict, description="max_new_tokens, temperature, top_p")


class SignalTokensSpec(_Node):
    """``count`` tokens named ``format.format(i=0..count-1)``, e.g. ``[IMG0]..[IMG3]``."""

    count: int = Field(ge=1)
    format: str

    @field_validator("format")
    @classmethod
    def _has_index(cls, value: str) -> str:
        if "{i}" not in value:
            raise ValueError("must contain '{i}' (the token index), e.g. '[IMG{i}]'")
        return value

    def names(self) -> list[str]:
        return [self.format.format(i=i) for i in range(self.count)]


class OutputProjectorSpec(_Provenance):
    type: Literal["linear", "mlp", "transformer"]
    out_dim: int | None = Field(None, ge=1, description="defaults to the generator's conditioning width")
    num_queries: int | None = Field(None, ge=1, description="defaults to the generator's conditioning tokens")
    d_model: int = Field(512, ge=1)
    nhead: int = Field(4, ge=1)
    num_encoder_layers: int = Field(4, ge=1)
    num_decoder_layers: int = Field(4, ge=1)
    dim_feedforward: int | None = Field(None, ge=1, description="defaults to 4 * d_model, as NExT-GPT")
    path: str | None = None
    seed: int = 0


class GeneratorSpec(WeightedNode):
    type: Literal["stable-diffusion", "zeroscope", "audioldm"]
    torch_dtype: str | None = None
    cpu_offload: bool = False
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
    root: Path | None = Field(None, exclude=True, description="folder that relative paths are read from")
    #: The Hugging Face cache that Hub ids in node paths are read from (None: huggingface_hub's default).
    _cache_dir: Path | None = PrivateAttr(None)
    #: The Hub repo (and revision) this spec was loaded from, when it was (for the model card).
    _hub_source: hub.HubRef | None = PrivateAttr(None)
    #: Hub node paths already fetched: path text -> local path (each is looked up on the Hub once).
    _hub_paths: dict[str, Path] = PrivateAttr(default_factory=dict)

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
        for proj in self.input_projectors.values():
            widths.encoder_output_dim(self, proj.encoder)
        for modality, out in self.outputs.items():
            tokens, width = widths.generator_condition_shape(self, modality)
            node = f"outputs.{modality}"
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
