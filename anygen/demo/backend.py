"""What the demo does besides drawing widgets: check uploads, stream a pipeline call, save its media.

Nothing here imports Gradio, so it is tested without it.
"""

from __future__ import annotations

import inspect
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anygen import media
from anygen.errors import AnyGenError, MediaError, OptionError
from anygen.options import CallOptions, Limits
from anygen.output import AnyToAnyOutput

MODALITIES = ("image", "video", "audio")
_SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".oga", ".m4a", ".aac", ".opus"),
    "video": (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"),
}
_KIND_OF_SUFFIX = {suffix: kind for kind, suffixes in _SUFFIXES.items() for suffix in suffixes}
_MEDIA_ARGS = {"image": "images", "audio": "audios", "video": "videos"}


@dataclass(frozen=True)
class UploadLimits:
    """Largest upload of each kind, in megabytes (10**6 bytes)."""

    image_mb: float = 20
    audio_mb: float = 50
    video_mb: float = 200

    def of(self, kind: str) -> float:
        return getattr(self, f"{kind}_mb")

    @property
    def largest_mb(self) -> float:
        return max(self.image_mb, self.audio_mb, self.video_mb)


@dataclass
class Upload:
    """A checked, decoded upload: its kind, the file (shown in the chat) and the decoded media."""

    kind: str
    path: Path
    name: str
    item: Any


def kind_of(path: str | Path) -> str:
    """``"image"``, ``"audio"`` or ``"video"`` from a file name; :class:`MediaError` for anything else."""
    name = Path(path).name
    suffix = Path(path).suffix.lower()
    if suffix not in _KIND_OF_SUFFIX:
        what = f"a {suffix} file" if suffix else "a file without an extension"
        raise MediaError(
            f"{name}: unsupported file type ({what}). Attach an image (PNG, JPEG, WebP, ...), "
            "audio (WAV, FLAC, MP3, OGG, ...) or a video (MP4, WebM, MOV, ...)."
        )
    return _KIND_OF_SUFFIX[suffix]


def load_upload(
    path: str | Path,
    limits: UploadLimits = UploadLimits(),
    accepted: Sequence[str] = MODALITIES,
    *,
    kind: str | None = None,
    work_limits: Limits | None = None,
) -> Upload:
    """Check one uploaded file (kind, size, content) and decode it; :class:`MediaError` says what is wrong.

    ``kind`` (``"image"``, ``"audio"``, ``"video"``) is what the file must be; by default its name says.
    Images and video frames larger than ``work_limits.max_input_pixels`` (default: :meth:`Limits.service`'s)
    are refused before they are decoded.
    """
    work_limits = work_limits if work_limits is not None else Limits.service()
    path = Path(path)
    name = path.name
    kind = kind or kind_of(path)
    if kind not in accepted:
        raise MediaError(
            f"{name}: this pipeline does not take {kind} inputs (it takes: {', '.join(accepted) or 'text only'})."
        )
    try:
        size = path.stat().st_size
    except OSError as err:
        raise MediaError(f"{name}: the upload could not be read ({err.strerror or err}).") from None
    limit = limits.of(kind)
    if size > limit * 1e6:
        raise MediaError(
            f"{name} is too large ({size / 1e6:.1f} MB); {kind} uploads are limited to {limit:g} MB."
        )
    if size == 0:
        raise MediaError(f"{name} is empty; expected {_a(kind)} file.")
    try:
        item = media.load_media(
            kind,
            path.read_bytes(),
            name=name,
            max_pixels=work_limits.max_input_pixels,
            max_video_pixels=work_limits.max_input_video_pixels,
        )
    except MediaError as err:
        raise MediaError(f"{name} could not be read as {_a(kind)} file: {_detail(err, kind, name)}") from None
    return Upload(kind, path, name, item)


def load_uploads(
    paths: Sequence[str | Path],
    limits: UploadLimits = UploadLimits(),
    accepted: Sequence[str] = MODALITIES,
    work_limits: Limits | None = None,
) -> list[Upload]:
    return [load_upload(p, limits, accepted, work_limits=work_limits) for p in paths]


def media_kwargs(uploads: Sequence[Upload]) -> dict[str, list]:
    """``images=``, ``audios=``, ``videos=`` for a pipeline call."""
    return {arg: [u.item for u in uploads if u.kind == kind] for kind, arg in _MEDIA_ARGS.items()}


def _a(kind: str) -> str:
    return {"image": "an image", "audio": "an audio", "video": "a video"}[kind]


def _detail(err: Exception, kind: str, name: str) -> str:
    """The loader's message without its "<bytes> (name)" label and object reprs."""
    text = str(err).replace(f"{kind} <bytes> ({name}) ", "")
    return re.sub(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>", "", text)


# --------------------------------------------------------------------------- options


def widget_number(value: Any) -> Any:
    """A widget's number as the option takes it: ``None`` for an empty field, ``3`` for ``3.0`` (Gradio's
    numbers are floats); anything else is left for :class:`~anygen.options.CallOptions` to check and name."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def as_seed(value: Any) -> int | None:
    """A seed from a widget value: ``None``, empty or negative means random; a fraction or text is an
    :class:`~anygen.errors.OptionError` naming ``seed``."""
    value = widget_number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return None
    return CallOptions(seed=value).seed


def call_options(**values: Any) -> CallOptions:
    """The demo's controls as checked :class:`~anygen.options.CallOptions` (widget numbers converted, per
    :func:`widget_number`; per-modality dicts as they are)."""
    converted = {
        k: ({m: widget_number(x) for m, x in v.items()} if isinstance(v, dict) else widget_number(v))
        for k, v in values.items()
        if k != "output_modalities"
    }
    return CallOptions.from_kwargs(output_modalities=list(values.get("output_modalities") or []), **converted)


def control_defaults(pipe) -> dict[str, Any]:
    """Starting values of the controls: the pipeline's own defaults (spec, else the loaded generators')."""
    llm = pipe.spec.llm.defaults
    out: dict[str, Any] = {
        "max_new_tokens": int(llm.get("max_new_tokens", 64)),
        "temperature": float(llm.get("temperature", 1.0)),
        "top_p": float(llm.get("top_p", 1.0)),
    }
    fallback = {"num_inference_steps": 50, "guidance_scale": 7.5, "num_frames": 16, "audio_length_in_s": 5.0}
    for modality in pipe.output_modalities:
        values = dict(fallback)
        if f"generator:{modality}" in pipe.loaded_components:
            values.update(
                {k: v for k, v in pipe.generator(modality).default_options().items() if v is not None}
            )
        values.update(pipe.spec.outputs[modality].generator.defaults)
        out[f"{modality}_steps"] = int(values["num_inference_steps"])
        out[f"{modality}_guidance"] = float(values["guidance_scale"])
        if modality == "video":
            out["num_frames"] = int(values["num_frames"])
        if modality == "audio":
            out["audio_length_in_s"] = float(values["audio_length_in_s"])
    return out


# --------------------------------------------------------------------------- streaming


@dataclass
class Event:
    """One step of a streamed call: ``kind`` is "text", "progress", "done" or "error"."""

    kind: str
    text: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    output: AnyToAnyOutput | None = None
    error: BaseException | None = None


class Cancelled(Exception):
    """Raised inside a pipeline call whose client went away."""


_current = threading.local()  # the _Run whose pipeline call runs on this thread


class _Run:
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.cancelled = threading.Event()
        self._stage, self._offset = "", 0

    def text(self, partial: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled
        self.events.put(Event("text", text=partial))

    def progress(self, stage: str, step: int, total: int) -> None:
        """The call's bar counts every stage (LLM tokens, then each generator's steps); report the stage's own."""
        if self.cancelled.is_set():
            raise Cancelled
        if stage != self._stage:
            self._stage, self._offset = stage, step
        step, total = step - self._offset, max(total - self._offset, 0)
        self.events.put(Event("progress", stage=stage, step=step, total=total))


class ProgressSink:
    """A file for the pipeline's tqdm bar (``pipe.set_progress_bar_config(**ProgressSink.bar_config())``).

    The bar is drawn as ``stage<US>n<US>total``; each redraw goes to the :class:`_Run` of the calling thread.
    """

    SEP = "\x1f"

    @classmethod
    def bar_config(cls) -> dict[str, Any]:
        return dict(
            file=cls(), bar_format=f"{{desc}}{cls.SEP}{{n}}{cls.SEP}{{total}}", mininterval=0, miniters=1
        )

    def write(self, s: str) -> int:
        run: _Run | None = getattr(_current, "run", None)
        parts = s.strip("\r\n ").split(self.SEP)
        if run is not None and len(parts) == 3:
            stage, n, total = parts
            if n.isdigit() and total.isdigit():
                run.progress(stage.strip(" :"), int(n), int(total))
        return len(s)

    def flush(self) -> None:
        pass


def supports_on_text(pipe) -> bool:
    """Whether the pipeline's ``__call__`` takes ``on_text=callable(partial_text)``."""
    try:
        return "on_text" in inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False


_patch_lock = threading.Lock()


def install_text_stream_shim() -> None:
    """Until ``AnyToAnyPipeline.__call__`` takes ``on_text``: follow the tokens ``anygen.generation.generate``
    reports (``on_token``) and decode the first row's text for the :class:`_Run` of the calling thread.

    Idempotent; calls on threads without a run are untouched.
    """
    import anygen.pipeline as pipeline_module

    with _patch_lock:
        original = pipeline_module.generate
        if getattr(original, "_anygen_demo_shim", False):
            return

        def generate(lm, prompts, options, *args, on_token=None, stop_strings=(), **kwargs):
            run: _Run | None = getattr(_current, "run", None)
            if run is None:
                return original(
                    lm, prompts, options, *args, on_token=on_token, stop_strings=stop_strings, **kwargs
                )
            tokens: list[int] = []

            def chained(row: int, token: int) -> None:
                if on_token is not None:
                    on_token(row, token)
                if row == 0:
                    tokens.append(token)
                    run.text(partial_text(lm.decode(tokens), stop_strings))

            return original(
                lm, prompts, options, *args, on_token=chained, stop_strings=stop_strings, **kwargs
            )

        generate._anygen_demo_shim = True  # type: ignore[attr-defined]
        pipeline_module.generate = generate


def partial_text(text: str, stop_strings: Sequence[str] = ()) -> str:
    """Text decoded so far, cut at the first stop string (the final answer is cut the same way)."""
    cut = min((text.index(s) for s in stop_strings if s in text), default=len(text))
    return text[:cut].strip()


def stream_call(
    call: Callable[..., AnyToAnyOutput], *, pass_on_text: bool, interval: float = 0.1, **kwargs: Any
) -> Iterator[Event]:
    """Run ``call(**kwargs)`` on a worker thread; yield "text"/"progress" events while it runs (at most one of
    each per ``interval`` seconds, the latest), then one "done" or "error" event.

    If the consumer stops early (the browser went away), the call is cancelled at its next token or step and
    waited for, so a concurrency limit around this generator still bounds the work in flight.
    """
    run = _Run()

    def work() -> None:
        _current.run = run
        try:
            extra = {"on_text": run.text} if pass_on_text else {}
            run.events.put(Event("done", output=call(**kwargs, **extra)))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            run.events.put(Event("error", error=err))
        finally:
            _current.run = None

    worker = threading.Thread(target=work, name="anygen-demo-call", daemon=True)
    worker.start()
    try:
        while True:
            latest: dict[str, Event] = {}
            event = run.events.get()
            deadline = time.monotonic() + interval
            while event.kind not in ("done", "error"):
                latest[event.kind] = event
                try:
                    event = run.events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    event = None
                    break
            yield from latest.values()
            if event is not None and event.kind in ("done", "error"):
                yield event
                return
    finally:
        run.cancelled.set()
        worker.join()


def error_message(err: BaseException) -> str:
    """What the chat says when a call fails: anygen's own message (for a bad option it names the option and
    what it takes), else a short internal error."""
    if isinstance(err, OptionError):
        return f"Bad setting: {err}"
    if isinstance(err, AnyGenError):
        return str(err)
    return f"Internal error ({type(err).__name__}: {err}). The server is still running; try again."


# --------------------------------------------------------------------------- outputs


def save_media(output: AnyToAnyOutput, folder: str | Path) -> dict[str, list[Path]]:
    """Write the output's media under ``folder``: ``{"image": [...png], "video": [...mp4], "audio": [...wav]}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, list[Path]] = {m: [] for m in MODALITIES}
    for i, image in enumerate(output.images):
        saved["image"].append(media.save_image(image, folder / f"image_{i}.png"))
    for i, video in enumerate(output.videos):
        saved["video"].append(video.save(folder / f"video_{i}.mp4"))
    for i, audio in enumerate(output.audios):
        saved["audio"].append(audio.save(folder / f"audio_{i}.wav"))
    return saved
