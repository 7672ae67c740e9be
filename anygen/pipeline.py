"""``AnyToAnyPipeline``: media and text in, text and media out.

    encoders -> input projectors -> LLM (signal tokens) -> output projectors -> generators

Components are built lazily, on first use: a text->image call never builds the video or audio model.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL.Image import Image as PILImage
from tqdm.auto import tqdm

from anygen import builders, hub, media, widths
from anygen.errors import AnyGenError, ContextLengthError, Interrupted, OptionError
from anygen.generation import SamplingOptions, SignalOutput, generate, strip_stop
from anygen.llm import LanguageModel
from anygen.messages import MessageError, is_messages, parse_messages
from anygen.options import ALL_GENERATOR_OPTIONS, CallOptions, Limits, check_call
from anygen.output import AnyToAnyOutput
from anygen.prompt import MediaSlot, Turn, conversation_segments
from anygen.spec import MODALITIES, SPEC_FILENAME, PipelineSpec, default_pipeline, load_spec

_MEDIA_ARGS = {"image": "images", "audio": "audios", "video": "videos"}
_DECODED = (media.Audio, media.Video, PILImage)  # inputs already loaded

FeatureCache = dict[tuple[str, str], torch.Tensor]


@dataclass
class MediaRequest:
    """One kind of media an answer asks for: the generator's input, one row per item to make."""

    owners: list[int]  # the prompt each row belongs to (it picks the row's seed)
    conditioning: torch.Tensor  # the output projector's output, [rows, tokens, width]


@dataclass
class Conditioned:
    """:meth:`AnyToAnyPipeline.condition`: the answers' text and, per kind of media asked for, its request."""

    outputs: list[AnyToAnyOutput]  # text and token ids; no media yet
    media: dict[str, MediaRequest]  # in the order image, video, audio
    seed: int | None  # the call's seed (drawn when none was given); None when a torch.Generator was given
    batched: bool = False
    prompt_tokens: list[int] = field(default_factory=list)  # each prompt's length in LLM positions (usage)


class AnyToAnyPipeline:
    """A NExT-GPT-style any-to-any pipeline described by a :class:`~anygen.spec.PipelineSpec`."""

    def __init__(self, spec: PipelineSpec, limits: Limits | None = None) -> None:
        self.spec = spec
        #: What one call may ask for (:class:`~anygen.options.Limits`); a front end sets its own.
        self.limits = limits if limits is not None else Limits()
        self._device = torch.device("cpu")
        self._dtype: torch.dtype | None = None
        self._components: dict[str, Any] = {}
        self._progress: dict[str, Any] = {}
        # What each generator can make and its defaults, from configs (the spec's defaults were checked by
        # PipelineSpec against the same rules as a call's options).
        with hub.no_downloads():  # configs from the cache (or the spec): constructing fetches no Hub weights
            self._geometry = {m: widths.generator_geometry(spec, m) for m in spec.outputs}
            self._gen_defaults = {m: widths.generator_defaults(spec, m) for m in spec.outputs}

    # -- construction, saving -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> AnyToAnyPipeline:
        """A bundled pipeline name (``"mini"``, the trained default; ``"tiny"``, random weights), a spec ``.yaml``,
        a folder written by :meth:`save_pretrained`, or a Hub repo id (``"org/name"``, a pipeline pushed with
        :meth:`push_to_hub`; fetched at ``revision`` into the Hugging Face cache, or ``cache_dir``; with
        ``HF_HUB_OFFLINE=1`` read from the cache only); None: ``$ANYGEN_PIPELINE`` or ``"mini"``. Hub ids in
        the spec's node paths are fetched when their nodes are first built (see :func:`~anygen.spec.load_spec`)."""
        spec = load_spec(
            name_or_path if name_or_path is not None else default_pipeline(),
            revision=revision,
            cache_dir=cache_dir,
        )
        return cls(spec)  # Hub parts are fetched on first use

    def save_pretrained(
        self, folder: str | Path, *, eval_report: dict[str, Any] | str | Path | None = None
    ) -> Path:
        """Write ``pipeline.yaml``, every component's weights (safetensors, Hugging Face layout) and a model card
        (``README.md``: the graph, every part's source and licence, and ``eval_report``, an ``anygen eval``
        report or its JSON file, as a table when given; see :mod:`anygen.model_card`)."""
        from anygen import model_card

        report = model_card.load_eval_report(eval_report) if eval_report is not None else None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = self.spec.model_dump(mode="json", exclude={"root"})
        model_card.record_provenance(self.spec, data)
        self.llm.save_pretrained(folder / "llm")
        data["llm"].update(path="llm", config=None, tokenizer={"type": "pretrained"})
        for name in self.spec.encoders:
            self.encoder(name).save_pretrained(folder / "encoders" / name)
            data["encoders"][name].update(path=f"encoders/{name}", config=None)
        for name in self.spec.input_projectors:
            builders.save_module(
                self.input_projector(name), folder / "input_projectors" / f"{name}.safetensors"
            )
            data["input_projectors"][name]["path"] = f"input_projectors/{name}.safetensors"
        for modality in self.spec.outputs:
            out = data["outputs"][modality]
            builders.save_module(
                self.output_projector(modality), folder / "outputs" / modality / "projector.safetensors"
            )
            out["projector"]["path"] = f"outputs/{modality}/projector.safetensors"
            self.generator(modality).save_pretrained(folder / "outputs" / modality / "generator")
            out["generator"].update(path=f"outputs/{modality}/generator", config=None)
        spec = PipelineSpec.from_dict(
            data, source=str(folder / SPEC_FILENAME), root=folder, cache_dir=self.spec._cache_dir
        )
        spec._hub_source = self.spec.hub_source
        (folder / SPEC_FILENAME).write_text(spec.to_yaml())
        model_card.write(folder, spec, eval_report=report)
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        commit_message: str | None = None,
        eval_report: dict[str, Any] | str | Path | None = None,
    ):
        """Save the pipeline (:meth:`save_pretrained`, model card included) to a temporary folder and upload it to
        Hub repo ``repo_id`` (created if missing, ``private`` as given), on branch ``revision`` (created from
        main if missing; default: main). Returns ``huggingface_hub``'s ``CommitInfo``.
        ``AnyToAnyPipeline.from_pretrained(repo_id, revision=revision)`` loads it back."""
        import tempfile

        from huggingface_hub import HfApi

        from anygen import hub, model_card

        if not hub.is_repo_id(repo_id):
            raise AnyGenError(f"repo_id={repo_id!r} is not a Hub repo id: expected 'org/name'")
        with tempfile.TemporaryDirectory(prefix="anygen-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "pipeline", eval_report=eval_report)
            saved = load_spec(folder)
            saved._hub_source = self.spec.hub_source
            model_card.write(folder, saved, eval_report=eval_report, repo_id=repo_id)  # usage names repo_id
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                commit_message=commit_message or f"Upload anygen pipeline {self.spec.name}",
            )

    def to(
        self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | None = None
    ) -> AnyToAnyPipeline:
        """Move loaded components now, and components loaded later when they are built.

        ``to("cuda")``, ``to(torch.float16)`` (diffusers style), ``to("cuda", torch.float16)`` or keywords; a
        device this machine lacks, or a dtype that is not a float type, raises :class:`AnyGenError`.
        """
        from anygen.devices import split_to_args

        device, dtype = split_to_args(device, dtype)
        if device is not None:
            self._device = device
        if dtype is not None:
            self._dtype = dtype
        for component in self._components.values():
            component.to(self._device, self._dtype) if self._dtype else component.to(self._device)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Options for the call's tqdm bar, e.g. ``disable=True`` (as in diffusers)."""
        self._progress = kwargs

    # -- components (built on first use) ------------------------------------------------------------
    def _component(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._components:
            component = build()
            component.to(self._device, self._dtype) if self._dtype else component.to(self._device)
            self._components[key] = component
        return self._components[key]

    @property
    def llm(self) -> LanguageModel:
        return self._component("llm", lambda: builders.build_llm(self.spec))

    def encoder(self, name: str):
        return self._component(f"encoder:{name}", lambda: builders.build_encoder(self.spec, name))

    def input_projector(self, name: str):
        return self._component(
            f"input_projector:{name}", lambda: builders.build_input_projector(self.spec, name)
        )

    def output_projector(self, modality: str):
        return self._component(
            f"output_projector:{modality}", lambda: builders.build_output_projector(self.spec, modality)
        )

    def generator(self, modality: str):
        return self._component(f"generator:{modality}", lambda: builders.build_generator(self.spec, modality))

    @property
    def loaded_components(self) -> list[str]:
        """Names of the components built so far (lazy loading shows here)."""
        return list(self._components)

    def load_all(self) -> AnyToAnyPipeline:
        """Build every component now instead of on first use."""
        _ = self.llm
        for name in self.spec.input_projectors:
            self.encoder(self.spec.input_projectors[name].encoder)
            self.input_projector(name)
        for modality in self.spec.outputs:
            self.output_projector(modality)
            self.generator(modality)
        return self

    # -- encoding --------------------------------------------------------------------------------------
    def _encoder_for(self, modality: str) -> tuple[str, str]:
        for proj_name, proj in self.spec.input_projectors.items():
            if modality in self.spec.encoders[proj.encoder].modalities:
                return proj.encoder, proj_name
        raise AnyGenError(
            f"pipeline {self.spec.name!r} has no encoder for {modality} inputs "
            f"(it takes: {', '.join(self.input_modalities) or 'text only'})"
        )

    @property
    def input_modalities(self) -> list[str]:
        return [m for m in MODALITIES if any(m in e.modalities for e in self.spec.encoders.values())]

    @property
    def output_modalities(self) -> list[str]:
        return list(self.spec.outputs)

    @torch.no_grad()
    def encode_media(
        self, modality: str, items: list, cache: FeatureCache | None = None
    ) -> list[torch.Tensor]:
        """Projected LLM embeddings ``[num_tokens, hidden]`` for each input (cached by content when asked)."""
        encoder_name, proj_name = self._encoder_for(modality)
        keys = [(modality, _content_key(item)) for item in items]
        todo = [i for i, key in enumerate(keys) if cache is None or key not in cache]
        if todo:
            features = self.encoder(encoder_name).encode(modality, [items[i] for i in todo])
            projector = self.input_projector(proj_name)
            projected = projector(features.to(self._device, next(projector.parameters()).dtype))
            fresh = {keys[i]: projected[j] for j, i in enumerate(todo)}
            if cache is not None:
                cache.update(fresh)
        else:
            fresh = {}
        return [fresh[k] if k in fresh else cache[k] for k in keys]

    # -- the call --------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        images: Sequence | None = None,
        audios: Sequence | None = None,
        videos: Sequence | None = None,
        *,
        output_modalities: Sequence[str] = (),
        only_requested: bool = False,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        num_inference_steps: int | dict[str, int] | None = None,
        guidance_scale: float | dict[str, float] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        audio_length_in_s: float | None = None,
        options: CallOptions | None = None,
        limits: Limits | None = None,
        history: Sequence[Turn] | None = None,
        feature_cache: FeatureCache | None = None,
        on_text: Callable[[str], None] | None = None,
        interrupt: Callable[[], bool] | None = None,
    ) -> AnyToAnyOutput | list[AnyToAnyOutput]:
        """Answer ``prompt`` (a string, or a list for a batch) given optional media inputs; or answer chat messages
        (``pipe([{"role": "user", "content": [{"type": "image", "image": ...}, {"type": "text", "text": ...}]}])``,
        the transformers / OpenAI format, see :mod:`anygen.messages`; read the answer back with ``.to_message()``).

        ``images``/``audios``/``videos``: for one prompt, a list of inputs (paths, bytes, arrays, PIL images,
        :class:`~anygen.media.Audio`/:class:`~anygen.media.Video`); for a batch, one such list per prompt.
        The LLM decides which media to make; ``output_modalities`` guarantees at least one of each listed
        kind; with ``only_requested=True`` the LLM may make no other kind. ``seed`` makes the call
        reproducible, and a prompt gives the same result in a batch as alone. ``on_text(partial_text)`` is
        called with the first prompt's answer so far after each token (for streaming).

        The options may also come as one :class:`~anygen.options.CallOptions` (``options=``; keywords given
        beside it override its values). Every option is checked before any model runs (the rules are in
        :mod:`anygen.options`): a bad one raises :class:`~anygen.errors.OptionError` naming it, one past
        ``limits`` (default: ``pipe.limits``) :class:`~anygen.errors.LimitError`, and a prompt that does not
        fit in the LLM's context :class:`~anygen.errors.ContextLengthError`. ``interrupt()`` is polled at
        every token and denoising step; when it returns True (or ``limits.max_seconds`` pass) the call raises
        :class:`~anygen.errors.Interrupted`.

        The call is :meth:`condition` (encoders, LLM, output projectors) then :meth:`generate_media` for each
        kind the answer asks for; a caller may run the two halves in different places.
        """
        opts = (options or CallOptions()).merged(
            output_modalities=output_modalities,
            only_requested=only_requested,
            seed=seed,
            generator=generator,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            num_frames=num_frames,
            audio_length_in_s=audio_length_in_s,
        )
        limits = limits if limits is not None else self.limits
        stop = _Stopper(interrupt, limits.max_seconds)
        answer, bar = self._condition(
            prompt,
            images,
            audios,
            videos,
            opts,
            limits=limits,
            history=history,
            feature_cache=feature_cache,
            on_text=on_text,
            stop=stop,
        )
        try:
            # 3. Generators, one batched call per modality.
            for modality, request in answer.media.items():
                made = self._generate_media(modality, request, opts, answer.seed, bar, stop)
                for i, item in zip(request.owners, made, strict=True):
                    getattr(answer.outputs[i], _MEDIA_ARGS[modality]).append(item)
        finally:
            bar.close()
        return answer.outputs if answer.batched else answer.outputs[0]

    def check_inputs(
        self,
        prompt: str | Sequence[str],
        images: Sequence | None = None,
        audios: Sequence | None = None,
        videos: Sequence | None = None,
        *,
        options: CallOptions | None = None,
        limits: Limits | None = None,
        **kwargs: Any,
    ) -> CallOptions:
        """Check a call without running (or building) any model: the prompts, how the inputs are laid out, and
        every option (keywords as :meth:`__call__`'s) against this pipeline and ``limits`` (default:
        ``pipe.limits``). Returns the checked :class:`~anygen.options.CallOptions`; raises
        :class:`~anygen.errors.AnyGenError` (:class:`~anygen.errors.OptionError` naming the option)."""
        opts = (options or CallOptions()).merged(**kwargs)
        limits = limits if limits is not None else self.limits
        prompt, images, audios, videos, _ = self._unpack_messages(prompt, images, audios, videos, None, limits)
        self._check(prompt, images, audios, videos, opts, limits)
        return opts

    @torch.no_grad()
    def condition(
        self,
        prompt: str | Sequence[str],
        images: Sequence | None = None,
        audios: Sequence | None = None,
        videos: Sequence | None = None,
        *,
        options: CallOptions | None = None,
        limits: Limits | None = None,
        history: Sequence[Turn] | None = None,
        feature_cache: FeatureCache | None = None,
        on_text: Callable[[str], None] | None = None,
        interrupt: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> Conditioned:
        """The first half of :meth:`__call__`: encoders, LLM and output projectors, no generator.

        Arguments as :meth:`__call__`; ``kwargs`` are its options (``output_modalities``, ``seed``,
        ``generator``, ``max_new_tokens``, ``temperature``, ``top_p``; the generators' options are checked
        here too, then used by :meth:`generate_media`). Returns the answers (text only) and, for each kind of
        media they ask for, the generator's input; :meth:`generate_media` with ``seed=result.seed`` (or the
        same ``generator``) then makes exactly the media ``__call__`` would.
        """
        opts = (options or CallOptions()).merged(**kwargs)
        limits = limits if limits is not None else self.limits
        answer, bar = self._condition(
            prompt,
            images,
            audios,
            videos,
            opts,
            limits=limits,
            history=history,
            feature_cache=feature_cache,
            on_text=on_text,
            stop=_Stopper(interrupt, limits.max_seconds),
        )
        bar.close()
        return answer

    @torch.no_grad()
    def generate_media(
        self,
        modality: str,
        conditioning: torch.Tensor,
        owners: Sequence[int],
        *,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        callback: Callable[[int, int], None] | None = None,
        options: CallOptions | None = None,
        limits: Limits | None = None,
        interrupt: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> list:
        """The second half of :meth:`__call__` for one kind: media from :meth:`condition`'s ``conditioning``.

        ``conditioning`` ``[rows, tokens, width]``: one row per item to make; ``owners[r]`` is the index of
        the prompt row ``r`` belongs to (the k-th item of a kind in a prompt is drawn with ``seed + k``).
        ``kwargs`` (or ``options``): ``num_inference_steps``, ``guidance_scale`` (a value, or a dict per
        modality), ``height``, ``width``, ``num_frames``, ``audio_length_in_s``; None means the spec's
        default. They are checked as in :meth:`__call__`. ``generator``: one ``torch.Generator`` for every
        row, or a list with one per prompt. ``callback(done, total)`` is called once per denoising step.
        """
        if modality not in self.spec.outputs:
            raise OptionError(
                (
                    "modality",
                    f"{modality!r} is not an output of pipeline {self.spec.name!r} "
                    f"(it makes: {', '.join(self.spec.outputs) or 'text only'})",
                )
            )
        unknown = sorted(set(kwargs) - set(ALL_GENERATOR_OPTIONS))
        if unknown:
            raise OptionError(
                [
                    (k, f"not an option of generate_media; it takes {', '.join(ALL_GENERATOR_OPTIONS)}")
                    for k in unknown
                ]
            )
        if seed is None and generator is None:
            raise AnyGenError("generate_media: give a seed or a torch.Generator")
        opts = (options or CallOptions()).merged(seed=seed, generator=generator, **kwargs)
        if not isinstance(conditioning, torch.Tensor) or conditioning.dim() != 3:
            raise AnyGenError("generate_media: conditioning must be a tensor [rows, tokens, width]")
        if len(owners) != conditioning.shape[0]:
            raise AnyGenError(
                f"generate_media: {len(owners)} owners for {conditioning.shape[0]} rows of conditioning"
            )
        if any(not isinstance(o, int) or o < 0 for o in owners):
            raise AnyGenError("generate_media: owners must be prompt indices (integers >= 0)")
        limits = limits if limits is not None else self.limits
        batch = max(owners, default=-1) + 1
        if isinstance(opts.generator, list) and len(opts.generator) < batch:
            raise OptionError(
                ("generator", f"a list of {len(opts.generator)} generators, but owners name {batch} prompts")
            )
        self._check_options(
            opts, limits, batch=len(opts.generator) if isinstance(opts.generator, list) else 1
        )
        return self._generate(
            modality, conditioning, list(owners), opts, callback, _Stopper(interrupt, limits.max_seconds)
        )

    def _generate(
        self,
        modality: str,
        conditioning: torch.Tensor,
        owners: list[int],
        opts: CallOptions,
        callback: Callable[[int, int], None] | None,
        stop: _Stopper,
    ) -> list:
        gen = self.generator(modality)
        # One torch.Generator per item: the k-th item of a kind in a prompt uses seed + k, batched or not.
        if opts.generator is None:
            counts: dict[int, int] = {}
            generators = []
            for i in owners:
                generators.append(torch.Generator("cpu").manual_seed(opts.seed + counts.get(i, 0)))
                counts[i] = counts.get(i, 0) + 1
        elif isinstance(opts.generator, list):
            # One per prompt: each row draws from its prompt's generator.
            generators = [opts.generator[i] for i in owners]
        else:
            generators = opts.generator

        def step(done: int, total: int) -> None:
            stop.check()
            if callback is not None:
                callback(done, total)

        call = self._generator_call(modality, opts)
        stop.check()
        try:
            return gen.generate(conditioning.to(self._device), generator=generators, callback=step, **call)
        finally:
            if self.spec.outputs[modality].generator.unload_after_use:
                self.unload(f"generator:{modality}")

    def unload(self, component: str) -> bool:
        """Free a built component (``"generator:video"``, as :attr:`loaded_components` names it); it is built
        again on next use. Returns whether it was loaded. Accelerator memory is released at once."""
        import gc

        dropped = self._components.pop(component, None) is not None
        if dropped:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return dropped

    def chat(self, messages: Sequence[Mapping[str, Any]] | None = None, **defaults: Any):
        """A multi-turn :class:`~anygen.chat.Conversation` over this pipeline; ``messages``: an earlier conversation
        (chat messages, :mod:`anygen.messages`) to go on from."""
        from anygen.chat import Conversation

        CallOptions.from_kwargs(**{k: v for k, v in defaults.items() if k not in _CONTROL_ARGS})  # fail early
        return Conversation(self, messages, **defaults)

    # -- steps -------------------------------------------------------------------------------------
    def _check_options(
        self, opts: CallOptions, limits: Limits, *, batch: int, prompts: Sequence[str] = ()
    ) -> None:
        check_call(
            opts,
            pipeline=self.spec.name,
            outputs=list(self.spec.outputs),
            geometry=self._geometry,
            defaults=self._gen_defaults,
            batch=batch,
            prompts=prompts,
            limits=limits,
        )

    def _unpack_messages(self, prompt, images, audios, videos, history, limits: Limits) -> tuple:
        """Chat messages (see :mod:`anygen.messages`) as ``(prompt, images, audios, videos, history)``; any other
        prompt unchanged."""
        if not is_messages(prompt) and not isinstance(prompt, Mapping):
            return prompt, images, audios, videos, history
        given = [name for name, v in (("images", images), ("audios", audios), ("videos", videos)) if v]
        if history:
            given.append("history")
        if given:
            raise MessageError(
                f"{', '.join(given)}: with chat messages, inputs and earlier turns go in the messages themselves"
            )
        parsed = parse_messages(prompt, limits=limits)
        if parsed.history and parsed.history[0].role == "system" and self.spec.llm.template.system_turn is None:
            raise MessageError(
                "messages[0]: this pipeline's prompt template takes no system message (llm.template.system_turn "
                "is null)"
            )
        return parsed.prompt, parsed.images, parsed.audios, parsed.videos, parsed.history

    def _check(
        self, prompt, images, audios, videos, opts: CallOptions, limits: Limits
    ) -> tuple[list[str], bool, dict[str, list[list]]]:
        """The prompts, whether they are a batch, and each kind's inputs per prompt, all checked."""
        batched = not isinstance(prompt, str)
        if batched and (isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence)):
            raise AnyGenError(f"prompt: expected a string or a list of strings, got {type(prompt).__name__}")
        prompts = list(prompt) if batched else [prompt]
        if not prompts:
            raise AnyGenError("prompt: the batch is empty")
        inputs = {
            m: _per_prompt(arg, len(prompts), batched, _MEDIA_ARGS[m])
            for m, arg in (("image", images), ("audio", audios), ("video", videos))
        }
        for i, text in enumerate(prompts):
            name = f"prompt[{i}]" if batched else "prompt"
            if not isinstance(text, str):
                raise AnyGenError(f"{name}: expected a string, got {type(text).__name__}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise AnyGenError(
                    f"{name}: not valid text ({err.reason} at character {err.start}); expected a Unicode string"
                ) from None
            if not text.strip() and not any(inputs[m][i] for m in MODALITIES):
                raise AnyGenError(f"{name}: empty, and no image, audio or video was given")
        self._check_options(opts, limits, batch=len(prompts), prompts=prompts)
        return prompts, batched, inputs

    def _sampling_options(self, opts: CallOptions) -> SamplingOptions:
        d = self.spec.llm.defaults
        return SamplingOptions(
            max_new_tokens=opts.max_new_tokens
            if opts.max_new_tokens is not None
            else d.get("max_new_tokens", 64),
            temperature=opts.temperature if opts.temperature is not None else d.get("temperature", 1.0),
            top_p=opts.top_p if opts.top_p is not None else d.get("top_p", 1.0),
        )

    def _check_context(
        self, embedded: list[torch.Tensor], sampling: SamplingOptions, wanted, history
    ) -> None:
        """:class:`ContextLengthError` when a prompt, the tokens asked for, and the signal tokens the answer may
        have to add do not fit in the LLM's context window (``max_position_embeddings``)."""
        config = getattr(self.llm.model, "config", None)
        window = getattr(config, "max_position_embeddings", None)
        if not isinstance(window, int) or window <= 0:
            return
        spans = self.llm.spans
        longest = max((len(s.token_ids) for s in spans.values()), default=1)
        extra = longest - 1 + sum(len(spans[m].token_ids) for m in wanted if m in spans)
        for i, emb in enumerate(embedded):
            needed = emb.shape[0] + sampling.max_new_tokens + extra
            if needed > window:
                field = "prompt" if len(embedded) == 1 else f"prompt[{i}]"
                what = "the prompt with the chat history" if history else "the prompt"
                raise ContextLengthError(
                    f"{field}: {what} is {emb.shape[0]} tokens; with max_new_tokens={sampling.max_new_tokens} "
                    f"(and {extra} for signal tokens the answer may have to add) that is {needed} tokens, more "
                    f"than the LLM's context of {window}; shorten the prompt or lower max_new_tokens",
                    needed=needed,
                    window=window,
                    field=field,
                )

    def _embed_conversation(self, turns: list[Turn], cache: FeatureCache | None) -> torch.Tensor:
        segments = conversation_segments(turns, self.spec.llm.template)
        slots = [(seg, t) for seg, t in segments if isinstance(seg, MediaSlot)]
        features: dict[tuple[int, MediaSlot], torch.Tensor] = {}
        for modality in MODALITIES:
            mine = [(seg, t) for seg, t in slots if seg.modality == modality]
            if mine:
                items = [turns[t].media[modality][seg.index] for seg, t in mine]
                for (seg, t), f in zip(mine, self.encode_media(modality, items, cache), strict=True):
                    features[(t, seg)] = f
        return self.llm.embed_segments(
            [features[(t, seg)] if isinstance(seg, MediaSlot) else seg for seg, t in segments]
        )

    def _condition(
        self,
        prompt: str | Sequence[str],
        images: Sequence | None,
        audios: Sequence | None,
        videos: Sequence | None,
        opts: CallOptions,
        *,
        limits: Limits,
        history: Sequence[Turn] | None = None,
        feature_cache: FeatureCache | None = None,
        on_text: Callable[[str], None] | None = None,
        stop: _Stopper | None = None,
    ) -> tuple[Conditioned, tqdm]:
        """:meth:`condition`, and the call's progress bar (the caller closes it)."""
        prompt, images, audios, videos, history = self._unpack_messages(
            prompt, images, audios, videos, history, limits
        )
        prompts, batched, inputs = self._check(prompt, images, audios, videos, opts, limits)
        history = _loaded_history(history, limits)
        stop = stop or _Stopper(None, limits.max_seconds)
        wanted = list(opts.output_modalities)
        sampling = self._sampling_options(opts)
        seed = opts.seed
        if seed is None and opts.generator is None:
            seed = random.randrange(2**31)
        # 1. Prompts: text and projected media features, embedded; they must fit in the LLM's context.
        lm = self.llm
        embedded = []
        for i, text in enumerate(prompts):
            loaded = {m: [_load(m, x, j, limits) for j, x in enumerate(inputs[m][i])] for m in MODALITIES}
            turn = Turn("user", text, loaded)
            embedded.append(self._embed_conversation([*(history or []), turn], feature_cache))
            stop.check()
        self._check_context(embedded, sampling, wanted, history)
        bar = tqdm(total=sampling.max_new_tokens, desc="llm", unit="step", **self._progress)
        try:
            # 2. The LLM answers, with complete signal spans and their hidden states.
            llm_generators = opts.generators_for(len(prompts)) or [
                torch.Generator(lm.device).manual_seed(seed) for _ in prompts
            ]
            first_ids: list[int] = []

            def on_token(row: int, tok: int) -> None:
                stop.check()
                if row != 0:
                    return
                _advance(bar)
                if on_text is not None:
                    first_ids.append(tok)
                    on_text(strip_stop(lm.decode(first_ids), self.spec.llm.template.stop))

            sequences = generate(
                lm,
                embedded,
                sampling,
                required=[wanted] * len(prompts),
                allowed=[wanted if opts.only_requested else None] * len(prompts),
                stop_strings=self.spec.llm.template.stop,
                generators=llm_generators,
                on_token=on_token,
            )
            bar.total = bar.n  # the answer may end before max_new_tokens, or run past it with forced spans
            bar.refresh()
            outputs = [AnyToAnyOutput(text=s.text, token_ids=s.token_ids) for s in sequences]
            # 3. Output projectors: the generators' conditioning, one batched call per modality.
            media = {}
            for modality in MODALITIES:
                owners = [
                    (i, s) for i, seq in enumerate(sequences) for s in seq.signals if s.modality == modality
                ]
                if owners:
                    media[modality] = MediaRequest(
                        owners=[i for i, _ in owners],
                        conditioning=self.project_signals(modality, [s for _, s in owners]),
                    )
        except BaseException:
            bar.close()
            raise
        prompt_tokens = [int(e.shape[0]) for e in embedded]
        return Conditioned(
            outputs=outputs, media=media, seed=seed, batched=batched, prompt_tokens=prompt_tokens
        ), bar

    @torch.no_grad()
    def project_signals(self, modality: str, signals: Sequence[SignalOutput]) -> torch.Tensor:
        """The output projector of ``modality`` over the LLM's signal spans: ``[len(signals), tokens, width]``."""
        projector = self.output_projector(modality)
        dtype = next(projector.parameters()).dtype
        hidden = torch.stack([s.hidden_states for s in signals]).to(self._device, dtype)
        embeds = torch.stack([s.input_embeds for s in signals]).to(self._device, dtype)
        return projector(hidden, embeds)

    def _generator_call(self, modality: str, opts: CallOptions) -> dict[str, Any]:
        """The generator's call options: the spec's defaults, overridden by the call's (per-modality dicts)."""
        return {**self.spec.outputs[modality].generator.defaults, **opts.for_modality(modality)}

    def _generate_media(self, modality, request, opts: CallOptions, seed, bar, stop: _Stopper) -> list:
        call = self._generator_call(modality, opts)
        gen = self.generator(modality)
        steps = call.get("num_inference_steps") or gen.default_options().get("num_inference_steps", 0)
        bar.total += steps
        bar.set_description(modality)
        if seed is not None and opts.seed is None:
            opts = opts.replace(seed=seed)  # the seed drawn for this call
        return self._generate(
            modality, request.conditioning, request.owners, opts, lambda *_: bar.update(1), stop
        )


class _Stopper:
    """Raises :class:`Interrupted` when ``interrupt()`` says so or the call's time is up."""

    def __init__(self, interrupt: Callable[[], bool] | None, max_seconds: float | None) -> None:
        self.interrupt = interrupt
        self.max_seconds = max_seconds
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def check(self) -> None:
        if self.interrupt is not None and self.interrupt():
            raise Interrupted("the call was interrupted (its caller went away or stopped it)")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Interrupted(f"the call took longer than limits.max_seconds={self.max_seconds:g}")


# Arguments of a call that are not options (a chat's defaults may hold them too).
_CONTROL_ARGS = ("options", "limits", "history", "feature_cache", "on_text", "interrupt")


def _advance(bar: tqdm) -> None:
    if bar.n >= bar.total:
        bar.total = bar.n + 1
    bar.update(1)


def _per_prompt(arg: Sequence | None, n: int, batched: bool, name: str) -> list[list]:
    """Inputs of one kind as one list per prompt."""
    if arg is None:
        return [[] for _ in range(n)]
    if isinstance(arg, (str, bytes, Path)) or not isinstance(arg, Sequence):
        arg = [arg]
    if not batched:
        return [list(arg)]
    if len(arg) != n or not all(isinstance(a, (list, tuple)) for a in arg):
        raise AnyGenError(
            f"{name}: with {n} prompts, give one list of {name} per prompt (got {len(arg)} entries)"
        )
    return [list(a) for a in arg]


def _load(modality: str, source: Any, index: int, limits: Limits | None = None):
    """An input, decoded; images and video frames larger than ``limits.max_input_pixels`` are refused unread."""
    limits = limits if limits is not None else Limits()
    return media.load_media(
        modality,
        source,
        name=f"{_MEDIA_ARGS[modality]}[{index}]",
        max_pixels=limits.max_input_pixels,
        max_video_pixels=limits.max_input_video_pixels,
    )


def _loaded_history(history: Sequence[Turn] | None, limits: Limits) -> list[Turn] | None:
    """``history`` with every input decoded (a caller, or a server, may hold them as paths or bytes)."""
    if not history:
        return None
    loaded = []
    for turn in history:
        if turn.media and any(not isinstance(x, _DECODED) for items in turn.media.values() for x in items):
            media = {m: [_load(m, x, j, limits) for j, x in enumerate(items)] for m, items in turn.media.items()}
            turn = Turn(turn.role, turn.text, media)
        loaded.append(turn)
    return loaded


def _content_key(item: Any) -> str:
    """A hash of a media object's content, for the feature cache."""
    h = hashlib.sha1()
    if isinstance(item, media.Audio):
        h.update(item.waveform.tobytes())
        h.update(str(item.sample_rate).encode())
    elif isinstance(item, media.Video):
        h.update(item.frames.tobytes())
        h.update(str(item.fps).encode())
    else:
        h.update(item.tobytes())
        h.update(f"{item.size}{item.mode}".encode())
    return h.hexdigest()
