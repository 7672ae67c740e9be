"""Generators wrapping diffusers pipelines, conditioned on embeddings instead of text (as NExT-GPT does).

- :class:`StableDiffusionGenerator` (image): ``StableDiffusionPipeline``, conditioning ``[B, 77, 768]`` (SD-1.5)
  or ``[B, 77, 1024]`` (SD-2).
- :class:`ZeroscopeGenerator` (video): ``TextToVideoSDPipeline`` (Zeroscope v2 576w), ``[B, 77, 1024]``.
- :class:`AudioLDMGenerator` (audio): ``AudioLDMPipeline``, one CLAP vector per prompt, ``[B, 1, 512]``.

All share :class:`DiffusersGenerator`; a subclass only says how its pipeline encodes text and how its output
becomes anygen media.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from anygen._quiet import quiet_progress
from anygen.checkpoints import load_error_reason
from anygen.errors import AnyGenError, GenerationError, SpecError, WeightsError
from anygen.generators._pipelines import dtype_kwarg, pipeline_class
from anygen.generators.conditioning import ConditioningLayout
from anygen.generators.shapes import GENERATOR_MODALITIES, condition_width_of_unet, shape_from_text_encoder
from anygen.media import Audio, Video

#: ``callback(done, total)``: called once per denoising step with the steps done so far (1..total).
StepCallback = Callable[[int, int], None]

#: Written next to the diffusers files by ``save_pretrained``: generator type and generation defaults.
SIDECAR = "anygen_generator.json"

_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin.index.json",
)
_TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


# --------------------------------------------------------------------------------------------------------------
# Generation defaults (a pipeline spec may override any field)


@dataclass
class GenerationDefaults:
    """Defaults of the options every generator takes."""

    num_inference_steps: int = 50
    guidance_scale: float = 7.5


@dataclass
class ImageDefaults(GenerationDefaults):
    """``height``/``width`` None: the model's native size (UNet sample size x VAE scale: 512 SD-1.5, 768 SD-2)."""

    height: int | None = None
    width: int | None = None


@dataclass
class VideoDefaults(GenerationDefaults):
    """Zeroscope v2 576w is trained at 576x320; NExT-GPT renders 24 frames."""

    height: int | None = 320
    width: int | None = 576
    num_frames: int = 24
    fps: float = 8.0


@dataclass
class AudioDefaults(GenerationDefaults):
    """``audio_length_in_s`` None: the model's native length (5.12 s for AudioLDM). Guidance as diffusers' default."""

    guidance_scale: float = 2.5
    audio_length_in_s: float | None = None


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _own_memory(pipeline: Any) -> None:
    """Copy every CPU parameter and buffer of the pipeline's models into memory torch allocated itself.

    diffusers 0.42 and transformers 5 leave loaded weights as views into the memory-mapped safetensors files, at
    offsets that are not 64-byte aligned. CPU matmul kernels then take other code paths than for the same
    weights in torch-allocated memory and the results differ in the last bits, so a saved-and-reloaded model
    would not reproduce the original's outputs exactly (and the files would stay mapped while loaded).
    """
    with torch.no_grad():
        for module in pipeline.components.values():
            if not isinstance(module, torch.nn.Module):
                continue
            for param in module.parameters():
                if param.device.type == "cpu":
                    param.data = param.data.clone()
            for sub in module.modules():
                for name, buf in sub._buffers.items():
                    if buf is not None and buf.device.type == "cpu":
                        sub._buffers[name] = buf.clone()


# --------------------------------------------------------------------------------------------------------------
# Progress reporting: diffusers pipelines update their progress bar exactly once per denoising step (whatever the
# scheduler's order or extra warm-up timesteps), so the generator replaces the pipeline's tqdm bar with this.


class _StepReporter:
    def __init__(self, total: int | None, callback: StepCallback | None):
        self.total = total or 0
        self.done = 0
        self._callback = callback

    def __enter__(self) -> _StepReporter:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------------------


class DiffusersGenerator:
    """Base class: a diffusers pipeline conditioned on ``prompt_embeds`` of shape ``[B, *condition_shape]``.

    Attributes: ``pipeline`` (the diffusers pipeline), ``defaults`` (a :class:`GenerationDefaults` subclass; change
    it or call :meth:`set_defaults`), ``condition_shape`` ``(tokens, width)``, ``modality``, ``type_name``.
    """

    type_name: ClassVar[str]
    modality: ClassVar[str]
    defaults_class: ClassVar[type[GenerationDefaults]] = GenerationDefaults
    #: Knobs of the tiny config (and ``anygen_generator.json``'s ``architecture``) passed to ``__init__``.
    architecture_knobs: ClassVar[tuple[str, ...]] = ()
    # Components of the diffusers folder and what they hold: diffusers model, transformers model, tokenizer, scheduler.
    components: ClassVar[dict[str, str]] = {
        "unet": "diffusers",
        "vae": "diffusers",
        "text_encoder": "transformers",
        "tokenizer": "tokenizer",
        "scheduler": "scheduler",
    }

    condition_shape: tuple[int, int]

    def __init__(self, pipeline: Any, *, defaults: GenerationDefaults | Mapping[str, Any] | None = None):
        self.pipeline = pipeline
        if isinstance(defaults, GenerationDefaults):
            self.defaults = dataclasses.replace(defaults)
        else:
            self.defaults = self.defaults_class()
            self.set_defaults(**(defaults or {}))
        #: The named tensors it is conditioned on; several travel packed as one ``[B, 1, total]`` tensor.
        self.layout = self._layout_of(pipeline)
        self.condition_shape = self.layout.shape
        self._empty_cache: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._callback: StepCallback | None = None
        # The caller draws one progress bar: no tqdm bars from diffusers, steps reported to `callback` instead.
        pipeline.set_progress_bar_config(disable=True)
        pipeline.progress_bar = self._progress_bar

    def __repr__(self) -> str:
        return f"{type(self).__name__}(condition_shape={self.condition_shape}, defaults={self.defaults})"

    # ---- construction ----------------------------------------------------------------------------------------

    @classmethod
    def _pipeline_load_kwargs(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> DiffusersGenerator:
        """Load from a local folder in the diffusers layout (never the network), in ``torch_dtype`` (default
        float32, whatever dtype the files store).

        Raises :class:`WeightsError` naming the folder and every missing file. Generation defaults come from the
        class, then the folder's ``anygen_generator.json`` (written by :meth:`save_pretrained`), then ``defaults``.
        """
        root = Path(path)
        pipe_cls = pipeline_class(cls.type_name)
        cls._check_folder(root, pipe_cls.__name__)
        sidecar, architecture = cls._read_sidecar(root)
        # float32 unless asked: transformers would otherwise keep the stored dtype (a float16 copy stays float16)
        kwargs = {**cls._pipeline_load_kwargs(), **dtype_kwarg(torch_dtype or torch.float32)}
        try:
            with quiet_progress():
                pipeline = pipe_cls.from_pretrained(str(root), local_files_only=True, **kwargs)
        except Exception as err:  # OSError, ValueError, RuntimeError, SafetensorError... for bad files
            raise WeightsError(
                f"cannot load {cls.type_name} weights from {root}: {load_error_reason(err)}"
            ) from err
        _own_memory(pipeline)
        merged = {**sidecar, **(defaults or {})}
        return cls(pipeline, defaults=merged, **architecture)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | None = None,
        seed: int = 0,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> DiffusersGenerator:
        """A tiny random-weight generator from tiny knobs (see ``anygen.generators.tiny.TINY_KNOBS``).

        The same ``config`` and ``seed`` give identical weights. The caller's global torch RNG is left untouched.
        """
        from anygen.generators.tiny import resolve_tiny_config, tiny_components

        knobs = resolve_tiny_config(cls.type_name, config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            components = tiny_components(cls.type_name, knobs)
        pipeline = pipeline_class(cls.type_name)(**components, **cls._pipeline_init_kwargs())
        architecture = {k: knobs[k] for k in cls.architecture_knobs}
        return cls(pipeline, defaults={**knobs["defaults"], **(defaults or {})}, **architecture)

    @classmethod
    def _pipeline_init_kwargs(cls) -> dict[str, Any]:
        return {}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers layout (safetensors) plus ``anygen_generator.json`` with the generation defaults."""
        root = Path(path)
        with quiet_progress():
            self.pipeline.save_pretrained(str(root), safe_serialization=True)
        sidecar = {"type": self.type_name, "defaults": dataclasses.asdict(self.defaults)}
        if architecture := self.architecture():
            sidecar["architecture"] = architecture
        (root / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def _check_folder(cls, root: Path, pipeline_name: str) -> None:
        if not root.is_dir():
            raise WeightsError(f"{cls.type_name} weights folder {root} does not exist")
        index = root / "model_index.json"
        missing: list[str] = []
        if index.is_file():
            try:
                class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
                raise WeightsError(f"cannot read {index}: {err}") from err
            if class_name != pipeline_name:
                raise WeightsError(
                    f"{root} holds a {class_name} (model_index.json); the {cls.type_name} generator loads "
                    f"{pipeline_name} folders"
                )
        else:
            missing.append("model_index.json")
        for name, kind in cls.components.items():
            folder = root / name
            if kind in ("diffusers", "transformers"):
                if not (folder / "config.json").is_file():
                    missing.append(f"{name}/config.json")
                names = _DIFFUSERS_WEIGHTS if kind == "diffusers" else _TRANSFORMERS_WEIGHTS
                if not any((folder / n).is_file() for n in names):
                    missing.append(f"{name}/{names[0]} (or {', '.join(names[1:])})")
            elif kind == "scheduler":
                if not (folder / "scheduler_config.json").is_file():
                    missing.append(f"{name}/scheduler_config.json")
            elif kind == "tokenizer":
                if not (folder / "tokenizer_config.json").is_file():
                    missing.append(f"{name}/tokenizer_config.json")
                has_fast = (folder / "tokenizer.json").is_file()
                has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
                has_sentencepiece = (folder / "spiece.model").is_file()  # T5 (PixArt, CogVideoX)
                if not (has_fast or has_bpe or has_sentencepiece):
                    missing.append(f"{name}/tokenizer.json (or vocab.json + merges.txt, or spiece.model)")
        if missing:
            raise WeightsError(
                f"{cls.type_name} weights folder {root} is incomplete; missing: {'; '.join(missing)}"
            )

    def architecture(self) -> dict[str, Any]:
        """What this generator adds to its diffusers classes (none here; see ``architecture_knobs``)."""
        return {}

    @classmethod
    def _read_sidecar(cls, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The generation defaults and the architecture knobs recorded in ``anygen_generator.json``."""
        path = root / SIDECAR
        if not path.is_file():
            return {}, {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(f"cannot read {path}: {err}") from err
        if not isinstance(data, dict) or data.get("type") != cls.type_name:
            got = data.get("type") if isinstance(data, dict) else data
            raise WeightsError(f"{path} describes a {got!r} generator, not {cls.type_name!r}")
        defaults = data.get("defaults") or {}
        known = set(_field_names(cls.defaults_class))
        architecture = data.get("architecture") or {}
        unknown = (
            sorted(set(architecture) - set(cls.architecture_knobs))
            if isinstance(architecture, dict)
            else None
        )
        if unknown is None or unknown:
            raise WeightsError(
                f"{path}: architecture: unknown for a {cls.type_name} generator: {unknown or architecture!r} "
                f"(known: {list(cls.architecture_knobs)})"
            )
        return {k: v for k, v in defaults.items() if k in known}, dict(architecture)

    # ---- configuration ---------------------------------------------------------------------------------------

    def set_defaults(self, **overrides: Any) -> None:
        """Override generation defaults (e.g. from a pipeline spec); unknown names raise :class:`SpecError`."""
        known = _field_names(type(self.defaults))
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise SpecError(
                f"unknown {self.modality} generator option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        self.defaults = dataclasses.replace(self.defaults, **overrides)

    def default_options(self) -> dict[str, Any]:
        """The generation defaults as a dict (``num_inference_steps``, ``guidance_scale``, sizes...)."""
        return dataclasses.asdict(self.defaults)

    def _layout_of(self, pipeline: Any) -> ConditioningLayout:
        return ConditioningLayout.single(*self._condition_shape_of(pipeline))

    def _condition_shape_of(self, pipeline: Any) -> tuple[int, int]:
        shape = shape_from_text_encoder(
            self.type_name, pipeline.text_encoder.config.to_dict(), pipeline.tokenizer.model_max_length
        )
        expected = condition_width_of_unet(self.type_name, dict(pipeline.unet.config))
        if expected is not None and expected != shape[1]:
            raise WeightsError(
                f"{self.type_name}: the text encoder produces width {shape[1]} but the UNet expects {expected}"
            )
        return shape

    # ---- device / dtype --------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the pipeline runs (the accelerator when CPU offload is on)."""
        return self.pipeline._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.text_encoder.dtype

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> DiffusersGenerator:
        kwargs: dict[str, Any] = {}
        if device is not None:
            kwargs["device"] = device
        if dtype is not None:
            kwargs["dtype"] = dtype
        if kwargs:
            self.pipeline.to(**kwargs)
            self._empty_cache.clear()
        return self

    def enable_model_cpu_offload(
        self, gpu_id: int | None = None, device: str | torch.device | None = None
    ) -> None:
        """diffusers' model CPU offload (needs accelerate and an accelerator)."""
        self.pipeline.enable_model_cpu_offload(gpu_id=gpu_id, device=device)
        self._empty_cache.clear()

    # ---- text ------------------------------------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str] | str) -> torch.Tensor:
        """The generator's own text encoder, as its diffusers pipeline encodes a prompt: ``[B, *condition_shape]``."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"encode_text expects a non-empty list of strings, got {texts!r}")
        with torch.no_grad():
            return self._encode(texts, self.device)

    def encode_conditioning(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """The generator's own encoding of ``texts`` as its named tensors (``{"prompt_embeds": ...}``, plus
        ``pooled_prompt_embeds`` for SDXL...): what the output projector learns to produce in stage 2."""
        return self.layout.unpack(self.encode_text(texts))

    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def _empty_prompt_embeds(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The unconditional input (:meth:`_encode_empty`), computed once per device/dtype and packed."""
        key = (str(device), dtype)
        if key not in self._empty_cache:
            with torch.no_grad():
                empty = self._encode_empty(device, dtype)
            self._empty_cache[key] = self.layout.pack(empty) if isinstance(empty, Mapping) else empty
        return self._empty_cache[key]

    def _encode_empty(
        self, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """The unconditional input as this pipeline makes it: here ``encode_text([""])`` (NExT-GPT's); a family
        whose pipeline does otherwise (SDXL's zeros...) says so. A packed tensor or the named tensors."""
        return self._encode([""], device)

    # ---- the pipeline call -----------------------------------------------------------------------------------

    def _tensor_kwargs(self, embeds: torch.Tensor, negative: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The (packed) conditioning as the pipeline's keywords: ``prompt_embeds=``, ``pooled_prompt_embeds=``...
        and each ``negative_<name>=`` (none without guidance)."""
        kwargs = dict(self.layout.unpack(embeds))
        if negative is not None:
            kwargs.update({f"negative_{name}": value for name, value in self.layout.unpack(negative).items()})
        return kwargs

    def _pipeline_call(
        self, embeds: torch.Tensor, negative: torch.Tensor | None, opts: Any, generator: Any, **extra
    ):
        """The diffusers pipeline on the conditioning, with the call's steps, guidance and sizes (``height``,
        ``width``, and ``num_frames`` for video), as ``output_type="np"`` (floats in [0, 1], checked before they
        become pixels); ``extra``: the family's own keywords."""
        sizes = {k: getattr(opts, k) for k in ("height", "width", "num_frames") if hasattr(opts, k)}
        return self.pipeline(
            **self._tensor_kwargs(embeds, negative),
            num_inference_steps=opts.num_inference_steps,
            guidance_scale=opts.guidance_scale,
            generator=generator,
            output_type="np",
            **sizes,
            **extra,
        )

    def _images(self, out: Any, opts: Any) -> list:
        """An image pipeline's ``output_type="np"`` result as PIL images (checked finite first)."""
        images = _finite(np.asarray(out.images), "image", opts.guidance_scale)
        return list(self.pipeline.image_processor.numpy_to_pil(images))

    def _videos(self, out: Any, opts: Any) -> list:
        """A video pipeline's ``output_type="np"`` frames ``[B, T, H, W, 3]`` as :class:`Video` s at ``opts.fps``."""
        frames = np.asarray(out.frames)
        return [Video(frames=_to_uint8(video, opts.guidance_scale), fps=float(opts.fps)) for video in frames]

    # ---- generation ------------------------------------------------------------------------------------------

    def _check_embeds(self, embeds: Any, name: str, batch: int | None = None) -> torch.Tensor:
        tokens, width = self.condition_shape
        want = f"[{'B' if batch is None else f'1 or {batch}'}, {tokens}, {width}]"
        if not isinstance(embeds, torch.Tensor):
            raise TypeError(
                f"{self.modality} generator expects {name} as a torch.Tensor {want}, got {type(embeds).__name__}"
            )
        ok = embeds.dim() == 3 and tuple(embeds.shape[1:]) == (tokens, width) and embeds.shape[0] >= 1
        if ok and batch is not None:
            ok = embeds.shape[0] in (1, batch)
        if not ok:
            got = "[" + ", ".join(str(s) for s in embeds.shape) + "]"
            raise AnyGenError(f"{self.modality} generator expects {name} {want}, got {got}")
        if not embeds.is_floating_point():
            raise TypeError(f"{self.modality} generator expects floating-point {name}, got {embeds.dtype}")
        return embeds

    def _progress_bar(self, iterable: Iterable | None = None, total: int | None = None) -> Any:
        if iterable is not None:
            return self._report_iter(iterable)
        return _StepReporter(total, self._callback)

    def _report_iter(self, iterable: Iterable) -> Iterable:
        items = list(iterable)
        reporter = _StepReporter(len(items), self._callback)
        for item in items:
            yield item
            reporter.update()

    def generate(
        self,
        prompt_embeds: torch.Tensor | Mapping[str, torch.Tensor],
        *,
        negative_prompt_embeds: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        callback: StepCallback | None = None,
        **options: Any,
    ) -> list:
        """Media for each row of ``prompt_embeds`` ``[B, *condition_shape]``, or of the named tensors of
        :attr:`layout` (``{"prompt_embeds": ..., "pooled_prompt_embeds": ...}``).

        ``options`` are this kind's generation settings (see its defaults class: ``height``/``width`` for images,
        plus ``num_frames``/``fps`` for video, ``audio_length_in_s`` for audio); None or absent means the default.
        With ``guidance_scale > 1`` and no ``negative_prompt_embeds`` (``[B or 1, *condition_shape]``), the
        generator's own encoding of ``""`` is used. ``callback(done, total)`` is called once per denoising step.
        """
        known = _field_names(type(self.defaults))
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(
                f"{self.modality} generator got unexpected option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(known)}"
            )
        given = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, **options}
        opts = dataclasses.replace(self.defaults, **{k: v for k, v in given.items() if v is not None})

        if isinstance(prompt_embeds, Mapping):
            prompt_embeds = self.layout.pack(prompt_embeds, f"{self.modality} generator conditioning")
        if isinstance(negative_prompt_embeds, Mapping):
            negative_prompt_embeds = self.layout.pack(negative_prompt_embeds, "negative conditioning")
        embeds = self._check_embeds(prompt_embeds, "prompt_embeds")
        batch = embeds.shape[0]
        device, dtype = self.device, self.dtype
        embeds = embeds.to(device=device, dtype=dtype)
        negative = None
        if negative_prompt_embeds is not None:
            negative = self._check_embeds(negative_prompt_embeds, "negative_prompt_embeds", batch=batch)
        if self._guided(opts):
            if negative is None:
                negative = self._empty_prompt_embeds(
                    device, dtype
                )  # device read once: diffusers walks modules
            negative = negative.to(device=device, dtype=dtype).expand(batch, -1, -1).contiguous()
        else:
            negative = None  # no classifier-free guidance: the unconditional input is not used

        self._callback = callback
        try:
            with torch.no_grad():
                return self._run(embeds, negative, opts, generator)
        finally:
            self._callback = None

    def _guided(self, opts: Any) -> bool:
        """Whether the call has an unconditional branch (classifier-free guidance) and so takes a negative input:
        ``guidance_scale > 1`` here (a family whose ``guidance_scale`` means something else says otherwise)."""
        return opts.guidance_scale > 1

    def generate_from_text(self, prompts: Sequence[str] | str, **options: Any) -> list:
        """Plain text conditioning (the generator's own text encoder), for comparison; options as :meth:`generate`."""
        return self.generate(self.encode_text(prompts), **options)

    def _run(
        self, embeds: torch.Tensor, negative: torch.Tensor | None, opts: Any, generator: Any
    ) -> list:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------


class _ClipConditionedGenerator(DiffusersGenerator):
    """Conditioning: CLIP text encoder's last hidden state, padded to the tokenizer's max length."""

    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        embeds, _ = self.pipeline.encode_prompt(texts, device, 1, False)
        return embeds


class StableDiffusionGenerator(_ClipConditionedGenerator):
    """Images (``PIL.Image.Image``) from ``StableDiffusionPipeline`` (no safety checker is loaded)."""

    type_name = "stable-diffusion"
    modality = GENERATOR_MODALITIES[type_name]
    defaults_class = ImageDefaults

    @classmethod
    def _pipeline_load_kwargs(cls) -> dict[str, Any]:
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    @classmethod
    def _pipeline_init_kwargs(cls) -> dict[str, Any]:
        return cls._pipeline_load_kwargs()

    def _run(self, embeds, negative, opts, generator) -> list:
        return self._images(self._pipeline_call(embeds, negative, opts, generator), opts)


def _finite(values: np.ndarray, kind: str, guidance_scale: float) -> np.ndarray:
    """``values``, or :class:`GenerationError` when any is NaN or infinite (never cast to pixels or saved)."""
    if not np.isfinite(values).all():
        bad = "NaN" if np.isnan(values).any() else "infinite"
        raise GenerationError(
            f"the {kind} generator produced non-finite values ({bad}) with guidance_scale={guidance_scale:g}; "
            "nothing was written: try a smaller guidance_scale (or check the generator's weights)"
        )
    return values


def _to_uint8(frames: np.ndarray, guidance_scale: float = 0.0) -> np.ndarray:
    frames = _finite(frames, "video", guidance_scale)
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


class ZeroscopeGenerator(_ClipConditionedGenerator):
    """Videos (:class:`anygen.media.Video`, uint8 ``[T, H, W, 3]``) from ``TextToVideoSDPipeline``."""

    type_name = "zeroscope"
    modality = GENERATOR_MODALITIES[type_name]
    defaults_class = VideoDefaults
    architecture_knobs = ("frame_positions",)

    def __init__(
        self,
        pipeline: Any,
        *,
        defaults: GenerationDefaults | Mapping[str, Any] | None = None,
        frame_positions: bool = False,
    ):
        """``frame_positions``: add a sinusoidal frame-index embedding to the UNet's temporal attention
        (:mod:`anygen.generators.frame_positions`; Zeroscope itself has none)."""
        from anygen.generators.frame_positions import add_frame_positions, has_frame_positions

        if not isinstance(frame_positions, bool):
            raise SpecError(
                f"zeroscope generator: frame_positions: expected true or false, got {frame_positions!r}"
            )
        if frame_positions and not has_frame_positions(pipeline.unet):
            add_frame_positions(pipeline.unet)
        super().__init__(pipeline, defaults=defaults)

    def architecture(self) -> dict[str, Any]:
        from anygen.generators.frame_positions import has_frame_positions

        return {"frame_positions": True} if has_frame_positions(self.pipeline.unet) else {}

    def _run(self, embeds, negative, opts, generator) -> list:
        return self._videos(self._pipeline_call(embeds, negative, opts, generator), opts)


class AudioLDMGenerator(DiffusersGenerator):
    """Audio (:class:`anygen.media.Audio`, mono float32) from ``AudioLDMPipeline``.

    Conditioning is one L2-normalised CLAP text projection per prompt: ``[B, 1, projection_dim]`` here (the
    pipeline itself takes ``[B, projection_dim]``).
    """

    type_name = "audioldm"
    modality = GENERATOR_MODALITIES[type_name]
    defaults_class = AudioDefaults
    components = {**DiffusersGenerator.components, "vocoder": "transformers"}

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.vocoder.config.sampling_rate)

    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        # AudioLDMPipeline._encode_prompt: CLAP text_embeds, then F.normalize over the last dimension.
        return self.pipeline._encode_prompt(texts, device, 1, False).unsqueeze(1)

    def _run(self, embeds, negative, opts, generator) -> list:
        out = self.pipeline(
            prompt_embeds=embeds[:, 0],
            negative_prompt_embeds=None if negative is None else negative[:, 0],
            num_inference_steps=opts.num_inference_steps,
            guidance_scale=opts.guidance_scale,
            audio_length_in_s=opts.audio_length_in_s,
            generator=generator,
            output_type="np",
        )
        rate = self.sample_rate
        audios = _finite(np.asarray(out.audios, dtype=np.float32), "audio", opts.guidance_scale)
        return [Audio(waveform=w.reshape(-1), sample_rate=rate) for w in audios]
