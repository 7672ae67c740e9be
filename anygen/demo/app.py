"""The Gradio app: a multimodal chat (NExT-GPT's demo controls) and a ``generate`` API endpoint.

Run it with ``anygen demo`` or ``python demo/app.py``; :func:`build_demo` makes the app for a pipeline.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from anygen.demo.backend import (
    MODALITIES,
    ProgressSink,
    Upload,
    UploadLimits,
    as_seed,
    call_options,
    control_defaults,
    error_message,
    install_text_stream_shim,
    load_upload,
    media_kwargs,
    save_media,
    stream_call,
    supports_on_text,
)
from anygen.errors import AnyGenError, MediaError
from anygen.options import CallOptions, Limits

CONCURRENCY_ID = "pipeline"  # every event that runs the pipeline shares this concurrency limit
_TITLES = {"image": "Image output", "video": "Video output", "audio": "Audio output"}
_STAGES = {
    "llm": "writing",
    "image": "drawing the image",
    "video": "making the video",
    "audio": "making the audio",
}
_CURSOR = " ▌"


@dataclass
class Request:
    """One user message: its text and checked uploads (kept for "Regenerate")."""

    text: str
    uploads: list[Upload]


@dataclass
class ChatSession:
    """One browser tab's chat: the conversation with the pipeline and what the chatbot shows."""

    conversation: Any
    messages: list[dict] = field(default_factory=list)
    last: Request | None = None  # the last request answered (or being answered)
    pending: Request | None = None  # the request the next "respond" runs
    answered: bool = False  # whether ``last`` is in the conversation's history
    busy: bool = False  # an answer is being made


class DemoApp:
    """The callbacks, with the pipeline and settings they share."""

    def __init__(
        self, pipe, *, limits: UploadLimits, output_dir: Path, work_limits: Limits | None = None
    ) -> None:
        self.pipe = pipe
        self.limits = limits
        self.work_limits = work_limits if work_limits is not None else Limits.service()
        self.output_dir = output_dir
        self.inputs = pipe.input_modalities
        self.outputs = pipe.output_modalities
        self.defaults = control_defaults(pipe)
        self.on_text = supports_on_text(pipe)
        if not self.on_text:
            install_text_stream_shim()
        pipe.set_progress_bar_config(**ProgressSink.bar_config())

    # -- chat ------------------------------------------------------------------------------------------
    def new_session(self) -> ChatSession:
        return ChatSession(self.pipe.chat())

    def add_message(self, message: dict | None, session: ChatSession | None):
        """Show the user's message; check and decode its uploads (a bad one is answered at once)."""
        session = session or self.new_session()
        message = message or {}
        text = (message.get("text") or "").strip()
        files = [_path_of(f) for f in message.get("files") or []]
        if not text and not files:
            return gr.skip(), session, gr.MultimodalTextbox(value=None)
        uploads, errors = [], []
        for path in files:
            try:
                uploads.append(load_upload(path, self.limits, self.inputs, work_limits=self.work_limits))
            except MediaError as err:
                errors.append(str(err))
        content: list[Any] = [text] if text else []
        content += [{"path": str(u.path)} for u in uploads]
        bad = [Path(p).name for p in files if not any(u.path == Path(p) for u in uploads)]
        content += [f"(attached: {name})" for name in bad]
        session.messages.append({"role": "user", "content": content})
        if errors:
            problems = "\n".join(f"- {e}" for e in errors)
            session.messages.append(
                {
                    "role": "assistant",
                    "content": f"**Upload error.** I could not use your upload:\n{problems}\n\nPlease try again.",
                }
            )
            session.pending = session.last = None  # nothing to regenerate after an upload error
        else:
            session.pending = Request(text, uploads)
        return session.messages, session, gr.MultimodalTextbox(value=None, interactive=False)

    def prepare_regenerate(self, session: ChatSession | None):
        """Drop the last answer and queue its question again."""
        if session is None or session.last is None:
            return gr.skip(), session, gr.skip()
        if session.busy or session.pending is not None:
            gr.Warning("Wait for the answer to finish, then regenerate it.")
            return gr.skip(), session, gr.skip()
        while session.messages and session.messages[-1]["role"] == "assistant":
            session.messages.pop()
        if session.answered:
            session.conversation.undo()
            session.answered = False
        session.pending = session.last
        return session.messages, session, gr.MultimodalTextbox(interactive=False)

    def respond(self, session: ChatSession | None, *controls: Any, progress=gr.Progress()):  # noqa: B008
        """Answer the pending request, streaming the text; then show the media inline."""
        if session is None or session.pending is None:
            yield gr.skip(), session
            return
        request, session.pending = session.pending, None
        session.last, session.answered, session.busy = request, False, True
        try:
            try:
                options = self.options(*controls)
            except AnyGenError as err:  # a control out of range: say which, keep serving
                session.messages.append({"role": "assistant", "content": f"**Error.** {error_message(err)}"})
                yield session.messages, session
                return
            yield from self._answer(session, request, options, progress)
        finally:
            session.busy = False

    def _answer(self, session: ChatSession, request: Request, options: CallOptions, progress):
        reply: dict[str, Any] = {"role": "assistant", "content": "…"}
        session.messages.append(reply)
        yield session.messages, session
        text = ""
        events = stream_call(
            session.conversation.send,
            pass_on_text=self.on_text,
            text=request.text,
            **media_kwargs(request.uploads),
            options=options,
            limits=self.work_limits,
        )
        try:
            for event in events:
                if event.kind == "text":
                    text = event.text
                elif event.kind == "progress":
                    stage = event.stage
                    progress((event.step, event.total), desc=_STAGES.get(stage, stage), unit="steps")
                    if stage in MODALITIES:
                        status = f"*{_STAGES[stage]}… step {event.step}/{event.total}*"
                        reply["content"] = f"{text}\n\n{status}".strip()
                        yield session.messages, session
                        continue
                elif event.kind == "done":
                    session.answered = True
                    try:
                        reply["content"] = self.answer_content(event.output)
                    except Exception as err:  # e.g. a video that cannot be encoded: say so, keep serving
                        reply["content"] = f"{event.output.text}\n\n**Error.** {error_message(err)}".strip()
                    break
                elif event.kind == "error":
                    reply["content"] = f"**Error.** {error_message(event.error)}"
                    break
                reply["content"] = (text + _CURSOR).strip()
                yield session.messages, session
        finally:
            events.close()  # cancels the call if the client went away
        yield session.messages, session

    def answer_content(self, output) -> list[Any] | str:
        saved = save_media(output, self.output_dir / uuid.uuid4().hex)
        content: list[Any] = [output.text] if output.text.strip() else []
        for modality in MODALITIES:
            content += [{"path": str(p)} for p in saved[modality]]
        return content or "*(no answer)*"

    def unlock(self, session: ChatSession | None):
        """The input again, unless an answer is still being made."""
        return gr.MultimodalTextbox(interactive=not (session and session.busy))

    def clear(self):
        return [], None, gr.MultimodalTextbox(value=None, interactive=True)

    def options(
        self,
        want,
        seed,
        top_p,
        temperature,
        max_new_tokens,
        image_steps,
        image_guidance,
        video_steps,
        video_guidance,
        num_frames,
        audio_steps,
        audio_guidance,
        audio_length_in_s,
    ) -> CallOptions:
        """The controls as checked options (:class:`~anygen.errors.OptionError` names a bad one)."""
        values = {
            "image": (image_steps, image_guidance),
            "video": (video_steps, video_guidance),
            "audio": (audio_steps, audio_guidance),
        }
        return call_options(
            output_modalities=[m for m in want or [] if m in self.outputs],
            seed=as_seed(seed),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            num_inference_steps={m: values[m][0] for m in self.outputs},
            guidance_scale={m: values[m][1] for m in self.outputs},
            num_frames=num_frames if "video" in self.outputs else None,
            audio_length_in_s=audio_length_in_s if "audio" in self.outputs else None,
        )

    # -- API -------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        image: str | None = None,
        audio: str | None = None,
        video: str | None = None,
        output_modalities: list[str] | None = None,
        seed: int = -1,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_frames: int | None = None,
        audio_length_in_s: float | None = None,
    ) -> tuple[str, str | None, str | None, str | None]:
        """One answer (no chat history): the text, then the first image, video and audio made (None if none)."""
        try:  # the options first: a bad one is named before any upload is decoded
            options = call_options(
                output_modalities=output_modalities,
                seed=as_seed(seed),
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                num_frames=num_frames,
                audio_length_in_s=audio_length_in_s,
            )
        except AnyGenError as err:
            raise gr.Error(error_message(err)) from None
        uploads = []
        for kind, path in (("image", image), ("audio", audio), ("video", video)):
            if path:
                try:
                    uploads.append(
                        load_upload(
                            _path_of(path), self.limits, self.inputs, kind=kind, work_limits=self.work_limits
                        )
                    )
                except MediaError as err:
                    raise gr.Error(str(err)) from None
        try:
            output = self.pipe(
                prompt or "", **media_kwargs(uploads), options=options, limits=self.work_limits
            )
        except Exception as err:  # AnyGenError: bad options; anything else: still answer readably
            raise gr.Error(error_message(err)) from None
        saved = save_media(output, self.output_dir / uuid.uuid4().hex)
        first = [str(saved[m][0]) if saved[m] else None for m in ("image", "video", "audio")]
        return output.text, first[0], first[1], first[2]


def _path_of(file: Any) -> str:
    """A file path from what Gradio hands over: a path, or a FileData-like dict/object."""
    if isinstance(file, dict):
        return file.get("path") or file.get("name")
    return str(getattr(file, "path", file))


_CSS = """
#chatbot .message-wrap img, #chatbot .message-wrap video { max-width: 320px; max-height: 240px; }
#chatbot .user-row img { max-height: 180px; }
#chatbot .bot-row img { min-width: 192px; object-fit: contain !important; }
"""


def build_demo(
    pipe,
    *,
    limits: UploadLimits | None = None,
    concurrency: int = 1,
    max_queue: int = 16,
    output_dir: str | Path | None = None,
    work_limits: Limits | None = None,
) -> gr.Blocks:
    """The app for ``pipe`` (queue set up; call ``.launch()``). ``work_limits`` bound what one answer may ask
    for (default :meth:`Limits.service() <anygen.options.Limits.service>`)."""
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="anygen-demo-"))
        atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
    app = DemoApp(pipe, limits=limits or UploadLimits(), output_dir=Path(output_dir), work_limits=work_limits)
    d = app.defaults
    cap = app.work_limits  # slider ranges end at the limits (the API's numbers are checked against them too)
    has = set(app.outputs)
    attach = ", ".join(app.inputs) or "nothing (text only)"
    with gr.Blocks(title=f"anygen · {pipe.spec.name}") as demo:
        gr.Markdown(
            f"## anygen: any-to-any chat\nPipeline **{pipe.spec.name}**: {pipe.spec.description}  \n"
            f"Attach {attach}; the answer can hold text, {', '.join(app.outputs) or 'no media'}."
        )
        session = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    elem_id="chatbot",
                    label="Chat",
                    height=640,
                    feedback_options=None,
                    buttons=["copy"],
                    placeholder="Ask something; attach an image, audio or video with the clip button.",
                )
                chat_input = gr.MultimodalTextbox(
                    elem_id="chat-input",
                    file_count="multiple",
                    # No file_types: Gradio would refuse other files with a toast; the chat says why instead.
                    sources=["upload"],
                    placeholder="Type a message, attach media, press Enter…",
                    show_label=False,
                    autofocus=True,
                )
                with gr.Row():
                    regenerate = gr.Button("Regenerate", elem_id="regenerate", size="sm")
                    clear = gr.Button("Clear", elem_id="clear", size="sm")
                if pipe.spec.examples:  # the spec's own example prompts (mini: its world's)
                    gr.Examples(
                        examples=[[{"text": text, "files": []}] for text in pipe.spec.examples],
                        inputs=[chat_input],
                        label="Try",
                        elem_id="examples",
                    )
            with gr.Column(scale=1, min_width=280):
                want = gr.CheckboxGroup(
                    choices=app.outputs,
                    value=[],
                    label="Outputs to guarantee",
                    info="The model decides what to make; ticked kinds are always made.",
                    elem_id="output-modalities",
                )
                seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="seed")
                with gr.Accordion("Text", open=True):
                    top_p = gr.Slider(0.01, 1.0, value=d["top_p"], step=0.01, label="Top-p")
                    temperature = gr.Slider(  # 0 is greedy decoding (mini's default)
                        0.0, 2.0, value=d["temperature"], step=0.01, label="Temperature (0: greedy)"
                    )
                    max_new_tokens = gr.Slider(
                        1,
                        cap.max_new_tokens or max(512, d["max_new_tokens"]),
                        value=d["max_new_tokens"],
                        step=1,
                        label="Max new tokens",
                    )
                per_modality = {}
                for m in MODALITIES:
                    with gr.Accordion(_TITLES[m], open=False, visible=m in has):
                        steps = gr.Slider(
                            1,
                            cap.max_inference_steps or max(100, d.get(f"{m}_steps", 50)),
                            value=d.get(f"{m}_steps", 50),
                            step=1,
                            label="Inference steps",
                            elem_id=f"{m}-steps",
                        )
                        guidance = gr.Slider(
                            0.0,
                            20.0,
                            value=d.get(f"{m}_guidance", 7.5),
                            step=0.1,
                            label="Guidance scale",
                            elem_id=f"{m}-guidance",
                        )
                        extra = None
                        if m == "video":
                            extra = gr.Slider(
                                1, cap.max_num_frames or max(64, d.get("num_frames", 16)),
                                value=d.get("num_frames", 16), step=1,
                                label="Frames",
                            )  # fmt: skip
                        if m == "audio":
                            extra = gr.Slider(
                                0.5,
                                cap.max_audio_seconds or 30.0,
                                value=d.get("audio_length_in_s", 5.0),
                                step=0.5,
                                label="Length (s)",
                            )
                    per_modality[m] = (steps, guidance, extra)
        controls = [
            want,
            seed,
            top_p,
            temperature,
            max_new_tokens,
            *per_modality["image"][:2],
            *per_modality["video"],
            *per_modality["audio"],
        ]

        run = dict(concurrency_id=CONCURRENCY_ID, concurrency_limit=concurrency, api_visibility="private")
        unlock = dict(fn=app.unlock, inputs=session, outputs=chat_input, queue=False)
        submitted = chat_input.submit(
            app.add_message,
            [chat_input, session],
            [chatbot, session, chat_input],
            concurrency_limit=4,
            api_visibility="private",
        )
        answer = submitted.then(app.respond, [session, *controls], [chatbot, session], **run)
        answer.then(api_visibility="private", **unlock)
        again = regenerate.click(
            app.prepare_regenerate, [session], [chatbot, session, chat_input], api_visibility="private"
        )
        answer_again = again.then(app.respond, [session, *controls], [chatbot, session], **run)
        answer_again.then(api_visibility="private", **unlock)
        for clearing in (clear.click, chatbot.clear):  # the button, and the chatbot's own trash icon
            clearing(
                app.clear,
                None,
                [chatbot, session, chat_input],
                cancels=[submitted, answer, again, answer_again],
                queue=False,
                api_visibility="private",
            )

        # The API: `generate`, for gradio_client scripts (hidden widgets give it typed, named parameters).
        with gr.Column(visible=False):
            api_inputs = [
                gr.Textbox(label="prompt"),
                gr.File(label="image", type="filepath"),
                gr.File(label="audio", type="filepath"),
                gr.File(label="video", type="filepath"),
                gr.CheckboxGroup(choices=list(MODALITIES), value=[], label="output_modalities"),
                gr.Number(value=-1, precision=0, label="seed"),
                gr.Number(value=None, precision=0, label="max_new_tokens"),
                gr.Number(value=None, label="temperature"),
                gr.Number(value=None, label="top_p"),
                gr.Number(value=None, precision=0, label="num_inference_steps"),
                gr.Number(value=None, label="guidance_scale"),
                gr.Number(value=None, precision=0, label="num_frames"),
                gr.Number(value=None, label="audio_length_in_s"),
            ]
            api_outputs = [
                gr.Textbox(label="text"),
                gr.File(label="image"),
                gr.File(label="video"),
                gr.File(label="audio"),
            ]
            api_button = gr.Button("generate")
        api_button.click(
            app.generate,
            api_inputs,
            api_outputs,
            api_name="generate",
            api_description="One answer (no chat history). Returns the text and the first image, video and "
            "audio file made, None where none was made.",
            concurrency_id=CONCURRENCY_ID,
            concurrency_limit=concurrency,
        )
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return demo


def launch(
    pipe,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    limits: UploadLimits | None = None,
    concurrency: int = 1,
    max_queue: int = 16,
    work_limits: Limits | None = None,
) -> None:
    demo = build_demo(
        pipe, limits=limits, concurrency=concurrency, max_queue=max_queue, work_limits=work_limits
    )
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=f"{(limits or UploadLimits()).largest_mb:g}mb",
        show_error=True,
        ssr_mode=False,
        css=_CSS,
    )
