"""The options of a pipeline call, checked in one place before any model runs, and the limits on a call's work.

:class:`CallOptions` holds every option of ``AnyToAnyPipeline.__call__`` (and of ``condition``,
``generate_media`` and ``chat``); building one checks each value on its own:

* integers (``seed``, ``max_new_tokens``, ``num_inference_steps``, ``height``, ``width``, ``num_frames``) must
  be ``int`` (or a numpy integer): not ``bool``, not ``1.5``, not ``"3"``;
* numbers (``temperature``, ``top_p``, ``guidance_scale``, ``audio_length_in_s``) must be finite reals;
* ranges: ``seed`` in 0..2**63-1, ``max_new_tokens`` >= 1, ``num_inference_steps`` in 1..1000, ``height``
  and ``width`` in 1..16384, ``num_frames`` in 1..1024, ``temperature`` >= 0 (0: greedy), ``top_p`` in
  (0, 1], ``guidance_scale`` in [0, 1000], ``audio_length_in_s`` in (0, 3600]. The upper bounds are hard
  caps that hold whatever the :class:`Limits` (the Python API and the CLI set none by default): past them a
  generator's arithmetic breaks (allocations that overflow, a schedule of zero steps, non-finite values);
  ``max_new_tokens`` is bounded by the LLM's context window instead;
* ``num_inference_steps`` and ``guidance_scale`` may be a dict per modality, whose keys are modalities
  (``image``, ``video``, ``audio``);
* ``height`` and ``width`` come together (diffusers resets both to the model's size when one is missing);
* ``seed`` and ``generator`` exclude each other; ``generator`` is a ``torch.Generator`` (used for every
  prompt) or a list of them, one per prompt, as in diffusers.

:func:`check_call` then checks what depends on the pipeline: the kinds it makes, sizes that are multiples of
each generator's VAE scale factor (at least 8), audio at least one latent row of vocoder frames long, one
generator per prompt, no more steps than each generator's scheduler takes (its ``num_train_timesteps``,
less its ``steps_offset`` with "leading" spacing: 999 for the tiny generators and Stable Diffusion 1.5),
and the front end's :class:`Limits`. A bad value raises
:class:`~anygen.errors.OptionError` (:class:`~anygen.errors.LimitError` past a limit) naming each option
and what it accepts; ``err.fields`` lists the options.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anygen.errors import LimitError, OptionError, SpecError
from anygen.media import MAX_PIXELS, MAX_VIDEO_PIXELS

MODALITIES = ("image", "video", "audio")
MAX_SEED = 2**63 - 1
# Hard caps of the call options, whatever the Limits (see the module's docstring).
#: Denoising steps: the ``num_train_timesteps`` of every scheduler of anygen's generators (Stable Diffusion,
#: Zeroscope, AudioLDM and the tiny ones); :func:`check_call` checks each generator's own (often 999).
MAX_INFERENCE_STEPS = 1000
MAX_SIDE = 16384  # height, width (pixels)
MAX_FRAMES = 1024  # num_frames
MAX_AUDIO_SECONDS = 3600.0  # audio_length_in_s
MAX_GUIDANCE_SCALE = 1000.0  # guidance_scale: far above any useful value, and the arithmetic stays finite

#: Options of the LLM side (``condition``) and of each kind's generator (``generate_media``).
LLM_OPTIONS = (
    "output_modalities",
    "only_requested",
    "seed",
    "generator",
    "max_new_tokens",
    "temperature",
    "top_p",
)
GENERATOR_OPTIONS = {
    "image": ("num_inference_steps", "guidance_scale", "height", "width"),
    "video": ("num_inference_steps", "guidance_scale", "height", "width", "num_frames"),
    "audio": ("num_inference_steps", "guidance_scale", "audio_length_in_s"),
}
ALL_GENERATOR_OPTIONS = (
    "num_inference_steps",
    "guidance_scale",
    "height",
    "width",
    "num_frames",
    "audio_length_in_s",
)
#: Options that take a dict per modality as well as one value.
PER_MODALITY_OPTIONS = ("num_inference_steps", "guidance_scale")
#: Keys a spec's ``defaults`` may hold: the LLM's, and each generator's (``fps``: frames per second of a video).
LLM_DEFAULT_KEYS = ("max_new_tokens", "temperature", "top_p")
GENERATOR_DEFAULT_KEYS = {
    "image": GENERATOR_OPTIONS["image"],
    "video": (*GENERATOR_OPTIONS["video"], "fps"),
    "audio": GENERATOR_OPTIONS["audio"],
}


# -- one value ----------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A value that breaks its rule; the message says what was expected and what came."""


@dataclass(frozen=True)
class _Rule:
    kind: str  # "int" or "real"
    low: float | None = None
    low_open: bool = False  # low excluded
    high: float | None = None
    note: str = ""

    def expected(self) -> str:
        what = "an integer" if self.kind == "int" else "a finite number"
        if self.low is not None and self.high is not None:
            if self.kind == "int":
                high = "2**63-1" if self.high == MAX_SEED else f"{int(self.high)}"
                bounds = f" in {self.low:g}..{high}"
            else:
                bounds = f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            bounds = f" {'>' if self.low_open else '>='} {self.low:g}"
        else:
            bounds = ""
        return what + bounds + (f" ({self.note})" if self.note else "")

    def __call__(self, value: Any) -> int | float:
        import numpy as np

        if isinstance(value, (bool, np.bool_)):
            raise _Bad(f"expected {self.expected()}, got {value!r} (a bool)")
        if self.kind == "int":
            if not isinstance(value, (int, np.integer)):
                raise _Bad(f"expected {self.expected()}, got {_show(value)}")
            value = int(value)
        else:
            if not isinstance(value, (int, float, np.integer, np.floating)):
                raise _Bad(f"expected {self.expected()}, got {_show(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise _Bad(f"expected {self.expected()}, got {value!r}")
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        if not low_ok or (self.high is not None and value > self.high):
            raise _Bad(f"expected {self.expected()}, got {value!r}")
        return value


RULES: dict[str, _Rule] = {
    "seed": _Rule("int", 0, high=MAX_SEED),
    "max_new_tokens": _Rule("int", 1),
    "temperature": _Rule("real", 0, note="0: greedy"),
    "top_p": _Rule("real", 0, low_open=True, high=1),
    "num_inference_steps": _Rule("int", 1, high=MAX_INFERENCE_STEPS),
    "guidance_scale": _Rule("real", 0, high=MAX_GUIDANCE_SCALE),
    "height": _Rule("int", 1, high=MAX_SIDE),
    "width": _Rule("int", 1, high=MAX_SIDE),
    "num_frames": _Rule("int", 1, high=MAX_FRAMES),
    "audio_length_in_s": _Rule("real", 0, low_open=True, high=MAX_AUDIO_SECONDS, note="seconds"),
    "fps": _Rule("real", 0, low_open=True),
}


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 48:
        text = text[:45] + "..."
    return f"{text} (a {type(value).__name__})"


def _is_torch_generator(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch.Generator means torch is loaded: no import for the check
    return torch is not None and isinstance(value, torch.Generator)


class _Problems:
    """Collects ``(option, message)`` pairs; :meth:`raise_if_any` raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, name: str, message: str) -> None:
        self.items.append((name, message))

    def check(self, name: str, rule: _Rule, value: Any) -> Any:
        try:
            return rule(value)
        except _Bad as bad:
            self.add(name, str(bad))
            return None

    def raise_if_any(self, error: type[OptionError] = OptionError) -> None:
        if self.items:
            raise error(self.items)


def _per_modality(problems: _Problems, name: str, value: Any) -> Any:
    """A value, or a dict ``{modality: value}`` (None values: the default), for ``num_inference_steps`` and
    ``guidance_scale``."""
    rule = RULES[name]
    if not isinstance(value, Mapping):
        try:
            return rule(value)
        except _Bad as bad:
            problems.add(name, f"{bad}; or a dict {{modality: value}} with keys {', '.join(MODALITIES)}")
            return None
    out = {}
    for key, item in value.items():
        if key not in MODALITIES:
            problems.add(
                f"{name}.{key}", f"{key!r} is not a modality; the keys may be {', '.join(MODALITIES)}"
            )
            continue
        out[key] = None if item is None else problems.check(f"{name}.{key}", rule, item)
    return out


# -- the options object -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallOptions:
    """Every option of a pipeline call, checked (see the module's docstring for the rules). ``None`` means
    the pipeline's default: the spec's ``defaults``, else the generator's own.

    ``seed`` makes the call reproducible: the LLM samples each prompt with a ``torch.Generator`` seeded with
    it, and the k-th item of a kind made for a prompt is drawn with ``seed + k``. ``generator`` instead hands
    over the random state itself (one for every prompt, or a list with one per prompt, as diffusers takes);
    give one or the other. With neither, a seed is drawn and reported (``Conditioned.seed``).
    """

    output_modalities: tuple[str, ...] = ()
    only_requested: bool = False
    seed: int | None = None
    generator: Any = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    num_inference_steps: int | dict[str, int | None] | None = None
    guidance_scale: float | dict[str, float | None] | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    audio_length_in_s: float | None = None

    def __post_init__(self) -> None:
        import numpy as np

        problems = _Problems()
        values: dict[str, Any] = {}
        # output_modalities: a kind, or a list of kinds.
        wanted = self.output_modalities
        if wanted is None:
            wanted = ()
        if isinstance(wanted, str):
            wanted = (wanted,)
        if not isinstance(wanted, (list, tuple)):
            problems.add(
                "output_modalities",
                f"expected a list of {', '.join(MODALITIES)}, got {_show(self.output_modalities)}",
            )
            wanted = ()
        kinds = []
        for i, m in enumerate(wanted):
            if not isinstance(m, str) or m not in MODALITIES:
                shown = repr(m) if isinstance(m, str) else _show(m)
                problems.add(
                    f"output_modalities[{i}]",
                    f"{shown[:60]} is not an output modality; expected {', '.join(MODALITIES)}",
                )
            else:
                kinds.append(m)
        values["output_modalities"] = tuple(dict.fromkeys(kinds))
        if not isinstance(self.only_requested, (bool, np.bool_)):
            problems.add("only_requested", f"expected True or False, got {_show(self.only_requested)}")
        else:
            values["only_requested"] = bool(self.only_requested)
        # seed / generator.
        gen = self.generator
        if gen is not None:
            if isinstance(gen, (list, tuple)):
                bad = [i for i, g in enumerate(gen) if not _is_torch_generator(g)]
                if not gen or bad:
                    got = "an empty list" if not gen else f"item {bad[0]}: {_show(gen[bad[0]])}"
                    problems.add(
                        "generator",
                        f"expected a torch.Generator or a list of them, one per prompt; got {got}",
                    )
                else:
                    values["generator"] = list(gen)
            elif not _is_torch_generator(gen):
                problems.add("generator", f"expected a torch.Generator or a list of them, got {_show(gen)}")
            if self.seed is not None:
                problems.add(
                    "generator", "give seed or generator, not both (a generator carries its own seed)"
                )
        for name in (
            "seed",
            "max_new_tokens",
            "temperature",
            "top_p",
            "height",
            "width",
            "num_frames",
            "audio_length_in_s",
        ):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, Mapping):
                    problems.add(
                        name,
                        f"expected {RULES[name].expected()}, got a dict (only num_inference_steps and guidance_scale take one per modality)",
                    )
                else:
                    values[name] = problems.check(name, RULES[name], value)
        for name in PER_MODALITY_OPTIONS:
            value = getattr(self, name)
            if value is not None:
                values[name] = _per_modality(problems, name, value)
        if (self.height is None) != (self.width is None):
            given, missing = ("height", "width") if self.width is None else ("width", "height")
            problems.add(
                given,
                f"given without {missing}; give height and width together ({given} alone would be dropped: "
                "diffusers then makes the model's own size)",
            )
        problems.raise_if_any()
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # -- building ---------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CallOptions:
        """Options from keyword arguments; an unknown name is an :class:`OptionError` listing the known ones."""
        _refuse_unknown(kwargs, cls.names())
        return cls(**kwargs)

    def replace(self, **kwargs: Any) -> CallOptions:
        """A copy with these options changed (checked again)."""
        _refuse_unknown(kwargs, self.names())
        return dataclasses.replace(self, **kwargs)

    def merged(self, **kwargs: Any) -> CallOptions:
        """A copy with the options in ``kwargs`` that are given (not None, not ``()``/False) put over these."""
        given = {k: v for k, v in kwargs.items() if not _is_unset(k, v)}
        return self.replace(**given) if given else self

    # -- reading ----------------------------------------------------------------------------------------
    def as_kwargs(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of ``pipe(...)``."""
        return {k: getattr(self, k) for k in self.names() if not _is_unset(k, getattr(self, k))}

    def llm_kwargs(self) -> dict[str, Any]:
        """The options of ``AnyToAnyPipeline.condition``."""
        return {k: getattr(self, k) for k in LLM_OPTIONS}

    def generator_kwargs(self) -> dict[str, Any]:
        """The options of ``AnyToAnyPipeline.generate_media`` (per-modality dicts kept)."""
        return {k: getattr(self, k) for k in ALL_GENERATOR_OPTIONS}

    def for_modality(self, modality: str) -> dict[str, Any]:
        """The options ``modality``'s generator takes that this call sets, per-modality dicts resolved."""
        out = {}
        for key in GENERATOR_OPTIONS[modality]:
            value = getattr(self, key)
            if isinstance(value, dict):
                value = value.get(modality)
            if value is not None:
                out[key] = value
        return out

    def generators_for(self, batch: int) -> list[Any] | None:
        """One ``torch.Generator`` per prompt (the same one for all when a single one was given), or None."""
        if self.generator is None:
            return None
        return list(self.generator) if isinstance(self.generator, list) else [self.generator] * batch


def _is_unset(name: str, value: Any) -> bool:
    return (
        value is None
        or (name == "only_requested" and value is False)
        or (name == "output_modalities" and isinstance(value, (tuple, list)) and len(value) == 0)
    )


def _refuse_unknown(kwargs: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = [k for k in kwargs if k not in known]
    if unknown:
        raise OptionError([(k, f"unknown option; the options are {', '.join(known)}") for k in unknown])


# -- limits -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """How much work one call may ask for; None is no limit. Past a limit a call raises
    :class:`~anygen.errors.LimitError` naming the option, before any model runs.

    The Python API's default (``Limits()``) limits only how large an input image or video may be decoded;
    :meth:`service` gives the defaults of the demo and the server, for shared machines.
    """

    max_prompt_chars: int | None = None
    max_new_tokens: int | None = None
    max_inference_steps: int | None = None
    max_image_side: int | None = None  # height and width, each
    max_image_pixels: int | None = None  # height x width of one image
    max_num_frames: int | None = None
    max_video_pixels: int | None = None  # height x width x num_frames of one video
    max_audio_seconds: float | None = None
    max_input_pixels: int | None = MAX_PIXELS  # one input image or video frame, before decoding
    max_input_video_pixels: int | None = MAX_VIDEO_PIXELS  # frames x pixels of one input video
    max_seconds: float | None = None  # wall-clock time of one call (Interrupted past it)

    def __post_init__(self) -> None:
        problems = _Problems()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                rule = (
                    _Rule("real", 0, low_open=True)
                    if f.name in ("max_audio_seconds", "max_seconds")
                    else _Rule("int", 1)
                )
                problems.check(f"limits.{f.name}", rule, value)
        problems.raise_if_any()

    @classmethod
    def service(cls, **overrides: Any) -> Limits:
        """Defaults for a front end that many people share (the demo, the server): generous for a single
        answer, but no request can hold a worker for long."""
        values = dict(
            max_prompt_chars=8_000,
            max_new_tokens=512,
            max_inference_steps=100,
            max_image_side=2048,
            max_image_pixels=1024 * 1024,
            max_num_frames=64,
            max_video_pixels=576 * 320 * 64,
            max_audio_seconds=30.0,
            max_input_pixels=25_000_000,
            max_input_video_pixels=200_000_000,
            max_seconds=300.0,
        )
        return cls(**{**values, **overrides})

    def check_prompts(self, prompts: Sequence[str], problems: _Problems | None = None) -> None:
        own = problems is None
        problems = problems or _Problems()
        if self.max_prompt_chars is not None:
            for i, text in enumerate(prompts):
                if isinstance(text, str) and len(text) > self.max_prompt_chars:
                    name = "prompt" if len(prompts) == 1 else f"prompt[{i}]"
                    problems.add(
                        name,
                        f"{len(text)} characters, more than limits.max_prompt_chars={self.max_prompt_chars}",
                    )
        if own:
            problems.raise_if_any(LimitError)


def _over(
    problems: _Problems, names: Sequence[str], value: float, limit: float | None, what: str, label: str
) -> None:
    if limit is not None and value > limit:
        named = {name for name, _ in problems.items}
        for name in names:
            if name not in named:  # one problem per option: the first limit it breaks
                problems.add(name, f"{what}, more than limits.{label}={limit:g}")


def check_call(
    options: CallOptions,
    *,
    pipeline: str,
    outputs: Sequence[str],
    geometry: Mapping[str, Any],
    defaults: Mapping[str, Mapping[str, Any]],
    batch: int = 1,
    prompts: Sequence[str] = (),
    limits: Limits | None = None,
) -> None:
    """What the options must satisfy for this pipeline: its outputs, each generator's ``geometry``
    (:class:`~anygen.generators.shapes.GeneratorGeometry`), ``batch`` prompts, and ``limits``.

    ``defaults`` are each generator's effective defaults (for the sizes a call does not give).
    """
    problems = _Problems()
    for i, m in enumerate(options.output_modalities):
        if m not in outputs:
            problems.add(
                "output_modalities" if len(options.output_modalities) == 1 else f"output_modalities[{i}]",
                f"{m!r} is not an output of pipeline {pipeline!r} (it makes: {', '.join(outputs) or 'text only'})",
            )
    gens = options.generator
    if isinstance(gens, list) and len(gens) != batch:
        problems.add(
            "generator", f"a list of {len(gens)} generators for {batch} prompt(s); give one per prompt"
        )
    for name in ("height", "width"):
        value = getattr(options, name)
        smallest = {
            m: geometry[m].min_size
            for m in outputs
            if name in GENERATOR_OPTIONS[m] and geometry.get(m) is not None and geometry[m].min_size
        }
        if value is not None and smallest and value < max(smallest.values()):
            m = max(smallest, key=smallest.get)
            problems.add(
                name,
                f"{value} is smaller than the {m} generator's smallest size, {smallest[m]} pixels (its UNet's "
                "deepest feature map must be at least 2x2)",
            )
            continue
        sized = {
            m: geometry[m].size_multiple
            for m in outputs
            if name in GENERATOR_OPTIONS[m] and geometry.get(m) is not None and geometry[m].size_multiple
        }
        step = math.lcm(*sized.values()) if sized else None
        if value is not None and step and value % step:
            kinds = " and ".join(sized)
            problems.add(
                name,
                f"{value} is not a multiple of {step} (the {kinds} generator{'s' if len(sized) > 1 else ''} "
                f"work{'' if len(sized) > 1 else 's'} in steps of {step} pixels); e.g. {max(step, value - value % step)}",
            )
    steps = options.num_inference_steps
    for m in outputs:
        most = getattr(geometry.get(m), "max_steps", None)
        value = steps.get(m) if isinstance(steps, dict) else steps
        name = f"num_inference_steps.{m}" if isinstance(steps, dict) else "num_inference_steps"
        if most and value is not None and value > most and name not in {n for n, _ in problems.items}:
            problems.add(
                name,
                f"{value} steps, more than the {m} generator's scheduler takes (at most {most}: its "
                "num_train_timesteps, less its steps_offset); expected an integer in "
                f"1..{most}",
            )
    video = geometry.get("video") if "video" in outputs else None
    frames = options.num_frames
    step = getattr(video, "frame_step", None)
    if frames is not None and step and (frames - 1) % step and "num_frames" not in {n for n, _ in problems.items}:
        problems.add("num_frames", _frames_message(frames, step))
    audio = geometry.get("audio") if "audio" in outputs else None
    length = options.audio_length_in_s
    if (
        length is not None
        and audio is not None
        and audio.min_audio_s is not None
        and length < audio.min_audio_s
    ):
        problems.add(
            "audio_length_in_s",
            f"{length:g} s is shorter than the audio generator's shortest, {audio.min_audio_s:g} s (one latent "
            f"row of {audio.audio_frame_s:g} s vocoder frames)",
        )
    problems.raise_if_any()
    if limits is not None:
        check_limits(options, limits, outputs=outputs, geometry=geometry, defaults=defaults, prompts=prompts)


def effective(
    options: CallOptions,
    modality: str,
    key: str,
    defaults: Mapping[str, Mapping[str, Any]],
    geometry: Mapping[str, Any],
) -> Any:
    """The value ``modality``'s generator will use for ``key``: the call's, else the default, else native."""
    value = options.for_modality(modality).get(key)
    if value is None:
        value = defaults.get(modality, {}).get(key)
    if value is None:
        geo = geometry.get(modality)
        if geo is not None and key in ("height", "width") and geo.native_size:
            value = geo.native_size[0 if key == "height" else 1]
        elif geo is not None and key == "audio_length_in_s":
            value = geo.native_audio_s
    return value


def check_limits(
    options: CallOptions,
    limits: Limits,
    *,
    outputs: Sequence[str],
    geometry: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    prompts: Sequence[str] = (),
) -> None:
    """:class:`~anygen.errors.LimitError` naming each option that asks for more than ``limits``."""
    geometry, defaults = geometry or {}, defaults or {}
    problems = _Problems()
    limits.check_prompts(prompts, problems)
    if options.max_new_tokens is not None:
        _over(
            problems,
            ["max_new_tokens"],
            options.max_new_tokens,
            limits.max_new_tokens,
            f"{options.max_new_tokens}",
            "max_new_tokens",
        )
    steps = options.num_inference_steps
    for key, value in steps.items() if isinstance(steps, dict) else [(None, steps)]:
        if value is not None:
            name = "num_inference_steps" + (f".{key}" if key else "")
            _over(
                problems, [name], value, limits.max_inference_steps, f"{value} steps", "max_inference_steps"
            )
    for name in ("height", "width"):
        value = getattr(options, name)
        if value is not None:
            _over(problems, [name], value, limits.max_image_side, f"{value} pixels", "max_image_side")
    sized = [n for n in ("height", "width") if getattr(options, n) is not None]
    if "image" in outputs and sized:
        h, w = (effective(options, "image", k, defaults, geometry) for k in ("height", "width"))
        if h and w:
            _over(
                problems,
                sized,
                h * w,
                limits.max_image_pixels,
                f"an image of {h}x{w} = {h * w} pixels",
                "max_image_pixels",
            )
    if "video" in outputs:
        if options.num_frames is not None:
            _over(
                problems,
                ["num_frames"],
                options.num_frames,
                limits.max_num_frames,
                f"{options.num_frames} frames",
                "max_num_frames",
            )
        given = [*sized, *(["num_frames"] if options.num_frames is not None else [])]
        h, w, n = (
            effective(options, "video", k, defaults, geometry) for k in ("height", "width", "num_frames")
        )
        if given and h and w and n:
            _over(
                problems,
                given,
                h * w * n,
                limits.max_video_pixels,
                f"a video of {n} frames of {h}x{w} = {h * w * n} pixels",
                "max_video_pixels",
            )
    if "audio" in outputs and options.audio_length_in_s is not None:
        _over(
            problems,
            ["audio_length_in_s"],
            options.audio_length_in_s,
            limits.max_audio_seconds,
            f"{options.audio_length_in_s:g} s",
            "max_audio_seconds",
        )
    problems.raise_if_any(LimitError)


def _frames_message(frames: int, step: int) -> str:
    near = max(1, (frames - 1) // step * step + 1)
    return (
        f"{frames} frames; the video generator makes {step}k + 1 (its VAE compresses time {step}x), e.g. {near} or "
        f"{near + step}"
    )


# -- spec defaults ------------------------------------------------------------------------------------------
def check_defaults(
    where: str,
    values: Mapping[str, Any],
    known: Sequence[str],
    geometry: Any = None,
    modality: str | None = None,
) -> list[tuple[str, str]]:
    """Problems with one node's ``defaults`` (names prefixed with ``where``): unknown keys, values that break
    the call options' rules (None: the generator's own default), sizes the generator cannot make."""
    problems = _Problems()
    for key, value in values.items():
        name = f"{where}.{key}"
        if key not in known:
            problems.add(name, f"unknown option; known: {', '.join(known)}")
        elif value is not None:
            values_ok = problems.check(name, RULES[key], value)
            if values_ok is None:
                continue
            if (
                key in ("height", "width")
                and geometry is not None
                and geometry.size_multiple
                and value % geometry.size_multiple
            ):
                problems.add(
                    name,
                    f"{value} is not a multiple of {geometry.size_multiple} (the {modality} generator's VAE)",
                )
            if (
                key in ("height", "width")
                and geometry is not None
                and geometry.min_size
                and value < geometry.min_size
            ):
                problems.add(
                    name,
                    f"{value} is smaller than the {modality} generator's smallest size, {geometry.min_size}",
                )
            if key == "num_frames" and getattr(geometry, "frame_step", None) and (value - 1) % geometry.frame_step:
                problems.add(name, _frames_message(value, geometry.frame_step))
            if (
                key == "num_inference_steps"
                and geometry is not None
                and geometry.max_steps
                and value > geometry.max_steps
            ):
                problems.add(
                    name,
                    f"{value} steps, more than the {modality} generator's scheduler takes (at most "
                    f"{geometry.max_steps})",
                )
            if (
                key == "audio_length_in_s"
                and geometry is not None
                and geometry.min_audio_s
                and value < geometry.min_audio_s
            ):
                problems.add(
                    name,
                    f"{value:g} s is shorter than the audio generator's shortest, {geometry.min_audio_s:g} s",
                )
    if modality == "image" and (values.get("height") is None) != (values.get("width") is None):
        problems.add(
            f"{where}.width" if values.get("width") is None else f"{where}.height",
            "give height and width together",
        )
    return problems.items


def check_spec_defaults(spec: Any, geometry: Mapping[str, Any]) -> None:
    """:class:`~anygen.errors.SpecError` naming every bad entry of the spec's ``llm.defaults`` and
    ``outputs.<kind>.generator.defaults`` (the rules of :class:`CallOptions`, and unknown keys)."""
    problems = check_defaults("llm.defaults", spec.llm.defaults, LLM_DEFAULT_KEYS)
    for modality, out in spec.outputs.items():
        gen = out.generator
        geo = geometry.get(modality)
        known = GENERATOR_DEFAULT_KEYS[modality]
        problems += check_defaults(
            f"outputs.{modality}.generator.defaults", gen.defaults, known, geo, modality
        )
        tiny = (gen.config or {}).get("defaults")
        if isinstance(tiny, Mapping):
            problems += check_defaults(
                f"outputs.{modality}.generator.config.defaults", tiny, known, geo, modality
            )
    if problems:
        lines = "\n".join(f"  {name}: {message}" for name, message in problems)
        raise SpecError(f"pipeline {spec.name!r}: invalid defaults:\n{lines}")
