"""Fuzzing: random, malformed and extreme values of every option and input kind, through the Python API, the
CLI and the server's request handling. Each call must either work or raise anygen's own error
(:class:`~anygen.errors.AnyGenError`); the server must never answer a client's mistake with a 5xx.

A case the fuzzer draws from valid values only must work (no error at all). One part calls the Python API
with no work limits (its default) and extreme values of the right type (huge integers, the ends of the
float range): the hard caps of the options must refuse each one naming it, and the valid ones must work.

Bounded for CI: about ``ANYGEN_FUZZ_SECONDS`` (default 60) seconds in all, shared between the parts; the
cases are the same on every run (hypothesis, derandomized) unless ``ANYGEN_FUZZ_RANDOM=1``. The number of
cases each part ran is printed at the end.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from bombs import png_declaring  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from anygen import AnyToAnyPipeline  # noqa: E402
from anygen.errors import AnyGenError, ContextLengthError, LimitError, OptionError  # noqa: E402
from anygen.media import Audio, Video  # noqa: E402
from anygen.options import Limits  # noqa: E402

TOTAL_SECONDS = float(os.environ.get("ANYGEN_FUZZ_SECONDS", "60"))
# Shares of the budget: the cheap checks, real API calls, API calls with no limits, the CLI, the server.
SHARES = {"check": 0.12, "api": 0.3, "nolimits": 0.16, "cli": 0.18, "server": 0.24}
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nextgpt-samples" / "assets"
RUNS: Counter[str] = Counter()
# Small enough that every accepted call is quick on the tiny pipeline.
FUZZ_LIMITS = Limits(
    max_prompt_chars=300,
    max_new_tokens=6,
    max_inference_steps=2,
    max_image_side=64,
    max_image_pixels=64 * 64,
    max_num_frames=4,
    max_video_pixels=64 * 64 * 4,
    max_audio_seconds=0.5,
    max_input_pixels=1_000_000,
    max_input_video_pixels=5_000_000,
)


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=os.environ.get("ANYGEN_FUZZ_RANDOM", "") != "1",
        suppress_health_check=list(HealthCheck),
    )


class _Budget:
    def __init__(self, part: str) -> None:
        self.part = part
        self.end = time.monotonic() + TOTAL_SECONDS * SHARES[part]

    def over(self) -> bool:
        return time.monotonic() > self.end


@pytest.fixture(scope="module")
def pipe():
    p = AnyToAnyPipeline.from_pretrained("tiny")
    p.limits = FUZZ_LIMITS
    p.set_progress_bar_config(disable=True)
    return p


# -- values -------------------------------------------------------------------------------------------------
EXTREMES = [0, -1, 1, 2, 3, 8, 63, 64, 65, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]
FLOATS = [
    0.0,
    -0.0,
    1e-300,
    5e-324,
    0.001,
    0.5,
    1.0,
    1.5,
    2.0,
    7.5,
    1e30,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
]
JUNK = ["", "high", "1", "nan", "inf", "image", "\ud800", None, True, False, [], {}, [1], b"1", object()]
MODALITY_KEYS = st.sampled_from(["image", "video", "audio", "bogus", "", "IMAGE"])


def _scalar():
    return st.one_of(
        st.sampled_from(EXTREMES),
        st.sampled_from(FLOATS),
        st.sampled_from(JUNK),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(1, 4),
        st.floats(0.0, 2.0),
        st.builds(np.int64, st.integers(-5, 10)),
        st.builds(np.float32, st.floats(-2, 2, width=32)),
    )


def _option_value(name: str):
    """Random values for an option: mostly small valid ones, often malformed or extreme ones."""
    small = _valid_value(name)
    weird = _scalar()
    if name == "output_modalities":
        weird = st.one_of(
            weird, st.lists(st.one_of(st.sampled_from(["image", "smell", ""]), _scalar()), max_size=4)
        )
    if name in ("num_inference_steps", "guidance_scale"):
        weird = st.one_of(weird, st.dictionaries(MODALITY_KEYS, st.one_of(small, _scalar()), max_size=3))
    return st.one_of(st.none(), small, small, weird)


OPTION_NAMES = [
    "output_modalities",
    "only_requested",
    "seed",
    "max_new_tokens",
    "temperature",
    "top_p",
    "num_inference_steps",
    "guidance_scale",
    "height",
    "width",
    "num_frames",
    "audio_length_in_s",
]


def _valid_value(name: str):
    return {
        "seed": st.integers(0, 2**63 - 1),
        "max_new_tokens": st.integers(1, 6),
        "temperature": st.one_of(st.floats(0, 2), st.sampled_from([0, 1e-300, 1e30])),
        "top_p": st.one_of(st.floats(0.01, 1), st.sampled_from([1e-300, 1])),
        "num_inference_steps": st.one_of(
            st.integers(1, 2),
            st.dictionaries(st.sampled_from(["image", "video", "audio"]), st.integers(1, 2)),
        ),
        "guidance_scale": st.one_of(
            st.floats(0, 10),
            st.dictionaries(st.sampled_from(["image", "video", "audio"]), st.floats(0, 1000)),
        ),
        "height": st.sampled_from([16, 24, 32, 64]),
        "width": st.sampled_from([16, 24, 32, 64]),
        "num_frames": st.integers(1, 4),
        "audio_length_in_s": st.floats(0.02, 0.5),
        "only_requested": st.booleans(),
        "output_modalities": st.lists(st.sampled_from(["image", "video", "audio"]), max_size=3),
    }[name]


@st.composite
def valid_options(draw, names=OPTION_NAMES):
    """Only valid values (height and width together)."""
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=6))
    out = {name: draw(_valid_value(name)) for name in chosen}
    if ("height" in out) != ("width" in out):
        out["height"] = out["width"] = draw(_valid_value("height"))
    if "height" in out and out["height"] * out["width"] * 8 > FUZZ_LIMITS.max_video_pixels:
        out["num_frames"] = draw(st.integers(1, 4))  # the tiny video's 8 frames would pass the limit
    return out


@st.composite
def options(draw, names=OPTION_NAMES):
    """Half the cases: only valid values; the others: anything."""
    if draw(st.booleans()):
        return draw(valid_options(names))
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=6))
    out = {name: draw(_option_value(name)) for name in chosen}
    if draw(st.integers(0, 9)) == 0:
        out["generator"] = draw(
            st.one_of(
                st.builds(lambda s: torch.Generator().manual_seed(s), st.integers(0, 100)),
                st.lists(
                    st.builds(lambda s: torch.Generator().manual_seed(s), st.integers(0, 100)), max_size=3
                ),
                _scalar(),
            )
        )
    return out


def _small_png(size=(12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(seconds: float = 0.1) -> bytes:
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, np.zeros(max(1, int(16000 * seconds)), np.float32), 16000, format="WAV")
    return buffer.getvalue()


def _media_item(kind: str):
    files = {
        "image": [SAMPLES / "bird_image.jpg"],
        "audio": [SAMPLES / "bird_audio.wav", SAMPLES / "test.wav"],
        "video": [SAMPLES / "test.mp4"],
    }[kind]
    arrays = st.sampled_from(
        [
            np.zeros((0, 4, 3), np.uint8),
            np.full((4, 4, 3), np.nan, np.float32),
            np.full((4, 4, 3), 300, np.int32),
            np.zeros((2, 2, 2, 2, 2), np.uint8),
            np.zeros((3, 8, 8, 3), np.uint8),
            np.zeros((16,), np.float32),
            np.array(["a", "b"]),
            np.ones((5, 5), bool),
        ]
    )
    return st.one_of(
        st.sampled_from(files),
        st.sampled_from(
            [
                b"",
                b"not a media file",
                _small_png(),
                png_declaring(8000, 8000),
                png_declaring(14000, 14000),
                _wav(),
                _wav(0.0),
                "/no/such/file.png",
                str(SAMPLES),
                Image.new("RGBA", (5, 3)),
                Audio(np.zeros(400, np.float32), 8000),
                Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0),
                5,
                None,
                1.5,
                {"a": 1},
            ]
        ),
        arrays,
        st.binary(max_size=64),
    )


def _good_media(kind: str):
    good = {
        "image": [SAMPLES / "bird_image.jpg", _small_png(), Image.new("RGB", (9, 7))],
        "audio": [SAMPLES / "bird_audio.wav", _wav()],
        "video": [SAMPLES / "test.mp4", Video(np.zeros((2, 8, 8, 3), np.uint8), 4.0)],
    }[kind]
    return st.one_of(st.none(), st.none(), st.lists(st.sampled_from(good), max_size=1))


def _media(kind: str):
    return st.one_of(_good_media(kind), st.lists(_media_item(kind), max_size=2), _media_item(kind))


MODALITY_ORDER = ("image", "audio", "video")
NICE_PROMPTS = st.sampled_from(
    ["a dog on a beach", "draw a cat", "what is this?", "sing", "<image> and this?"]
)


def _prompt():
    return st.one_of(
        st.sampled_from(["a dog on a beach", "draw a cat", "what is this?", "sing"]),
        st.sampled_from(["a dog", "", "   ", "<image> what is this?", "<video><video>", "\ud800", "x" * 400]),
        st.text(max_size=40),
        st.lists(st.text(max_size=10), max_size=3),
        st.sampled_from([None, 5, b"bytes", ["a", 3]]),
    )


OUTCOMES: Counter[str] = Counter()


def _check_api_call(call, part: str) -> None:
    try:
        call()
    except AnyGenError as err:  # anygen's own error is a fine answer; any other fails the test
        OUTCOMES[f"{part}: {type(err).__name__}"] += 1
        if os.environ.get("ANYGEN_FUZZ_VERBOSE") == "2":
            OUTCOMES[f"{part}: {type(err).__name__}: {str(err)[:70]}"] += 1
    else:
        OUTCOMES[f"{part}: ok"] += 1


# -- the Python API -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def check_budget():
    return _Budget("check")


@pytest.fixture(scope="module")
def api_budget():
    return _Budget("api")


@_settings(2500)
@given(prompt=_prompt(), images=_media("image"), opts=options(), limits=st.sampled_from([None, FUZZ_LIMITS]))
def test_fuzz_api_checks(pipe, check_budget, prompt, images, opts, limits):
    """``check_inputs``: every option and prompt, no model run; it answers or raises AnyGenError only."""
    if check_budget.over():
        return
    RUNS["api checks"] += 1
    _check_api_call(lambda: pipe.check_inputs(prompt, images=images, limits=limits, **opts), "check")


@_settings(700)
@given(data=st.data())
def test_fuzz_api_calls(pipe, api_budget, data):
    """Real calls (``pipe(...)`` and ``chat.send``) with random inputs and options under small limits: most
    cases valid (they must work), the rest anything."""
    hostile = data.draw(st.integers(0, 9)) < 4
    prompt = data.draw(_prompt() if hostile else NICE_PROMPTS)
    images, audios, videos = (data.draw(_media(k) if hostile else _good_media(k)) for k in MODALITY_ORDER)
    opts = data.draw(options() if hostile else valid_options())
    chat = data.draw(st.booleans())
    if not hostile and "<image>" in prompt and not images:  # a valid prompt places only the images given
        prompt = prompt.replace("<image>", "").strip()
    if api_budget.over():  # after every draw: hypothesis replays a case with the same draws
        return
    RUNS["api calls"] += 1
    if chat:
        call = lambda: pipe.chat(**opts).send(prompt, images=images, audios=audios, videos=videos)  # noqa: E731
    else:
        call = lambda: pipe(prompt, images=images, audios=audios, videos=videos, **opts)  # noqa: E731
    if hostile:
        _check_api_call(call, "chat" if chat else "call")
    else:  # only valid values: it must work
        call()
        OUTCOMES[f"{'chat' if chat else 'call'}: valid ok"] += 1


# -- the Python API with no limits: extreme values of the right type ---------------------------------------------
# Per option: values the rules refuse (past a hard cap, or at the edges of the float range), and valid values
# cheap enough to run (the caps themselves, 999 steps or 16384 pixels, would run for minutes: they are checked
# in tests/test_options.py).
EXTREME_TYPED = {
    "seed": ([-1, 2**63, 2**64, -(2**63), 10**30], [0, 2**63 - 1]),
    "max_new_tokens": ([0, -1, 1025, 2**31, 2**62, 2**63 - 1, 10**30], [1]),
    "temperature": (
        [-5e-324, -1e300, math.inf, -math.inf, math.nan],
        [0.0, 5e-324, 1e30, 1.7976931348623157e308],
    ),
    "top_p": ([0.0, -5e-324, 1.0000000000000002, 1e308, math.inf, math.nan], [5e-324, 1e-300, 1.0]),
    "num_inference_steps": ([0, -1, 1000, 1001, 2**31, 2**62, 2**63 - 1, 2**63, 10**30], [1]),
    "guidance_scale": (
        [-5e-324, 1000.0000000000001, 1e300, 1e308, math.inf, -math.inf, math.nan],
        [0.0, 5e-324, 1000.0],
    ),
    "height": ([0, -8, 16385, 16392, 2**31, 2**40, 2**62, 2**63], [16]),
    "width": ([0, -8, 16392, 2**32, 2**40, 2**63 - 1], [16]),
    "num_frames": ([0, -1, 1025, 2**31, 2**40, 2**62], [1]),
    "audio_length_in_s": ([0.0, -0.0, 5e-324, 0.019, 3600.5, 1e300, 1e308, math.inf, math.nan], [0.02]),
}


def _typed(value):
    """The value, or the same value as a numpy scalar (where it fits)."""
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return st.sampled_from([value, np.int64(value)])
    if isinstance(value, float):
        return st.sampled_from([value, np.float64(value)])
    return st.just(value)


@st.composite
def extreme_case(draw):
    """``(kwargs, refused)``: options with extreme or cheap valid values, and the names of the refused ones."""
    names = draw(st.lists(st.sampled_from(sorted(EXTREME_TYPED)), unique=True, min_size=1, max_size=4))
    if ("height" in names) != ("width" in names):
        names.append("width" if "height" in names else "height")
    kwargs, refused = {}, []
    for name in names:
        bad, good = EXTREME_TYPED[name]
        if draw(st.integers(0, 2)):
            value = draw(st.sampled_from(bad))
            refused.append(name)
        else:
            value = draw(st.sampled_from(good))
        value = draw(_typed(value))
        if name in ("num_inference_steps", "guidance_scale") and draw(st.booleans()):
            value = {draw(st.sampled_from(["image", "video", "audio"])): value}
        kwargs[name] = value
    return kwargs, refused


@pytest.fixture(scope="module")
def bare_pipe():
    """The tiny pipeline as the Python API gives it: no work limits at all."""
    p = AnyToAnyPipeline.from_pretrained("tiny")
    p.set_progress_bar_config(disable=True)
    assert p.limits == Limits() and p.limits.max_inference_steps is None and p.limits.max_image_side is None
    return p


@pytest.fixture(scope="module")
def nolimits_budget():
    return _Budget("nolimits")


@_settings(400)
@given(case=extreme_case(), want=st.sampled_from([(), ("image",), ("video",), ("audio",)]))
def test_fuzz_api_without_limits(bare_pipe, nolimits_budget, case, want):
    """No limits, extreme values of the right type: a refused value is an OptionError naming it (or, for a
    max_new_tokens past the LLM's context, a ContextLengthError), before any work; valid cases work."""
    if nolimits_budget.over():
        return
    RUNS["api without limits"] += 1
    kwargs, refused = case
    call = {"max_new_tokens": 3, "num_inference_steps": 1, "output_modalities": want, "only_requested": True}
    call.update(kwargs)
    if not refused:
        out = bare_pipe("a dog on a beach", **call)
        assert all(np.isfinite(a.waveform).all() for a in out.audios)
        OUTCOMES["no limits: valid ok"] += 1
        return
    with pytest.raises(AnyGenError) as err:
        bare_pipe("a dog on a beach", **call)
    error = err.value
    OUTCOMES[f"no limits: {type(error).__name__}"] += 1
    assert not isinstance(error, LimitError), error
    if isinstance(error, ContextLengthError):
        assert "max_new_tokens" in refused, (kwargs, error)
    else:
        assert isinstance(error, OptionError), (kwargs, error)
        named = {field.split(".")[0] for field in error.fields}
        assert named and named <= set(refused), (kwargs, refused, error.fields)


# -- the CLI --------------------------------------------------------------------------------------------------
CLI_FLAGS = {
    "--seed": _option_value("seed"),
    "--steps": _option_value("num_inference_steps"),
    "--guidance-scale": _option_value("guidance_scale"),
    "--max-new-tokens": _option_value("max_new_tokens"),
    "--temperature": _option_value("temperature"),
    "--top-p": _option_value("top_p"),
    "--num-frames": _option_value("num_frames"),
    "--audio-length": _option_value("audio_length_in_s"),
    "--height": _option_value("height"),
    "--width": _option_value("width"),
    "--want": st.one_of(
        st.sampled_from(["image", "audio", "image,audio", "smell", ",", "video"]), st.text(max_size=8)
    ),
    "--image": st.sampled_from([str(SAMPLES / "bird_image.jpg"), "/no/such.png", str(SAMPLES / "test.wav")]),
    "--audio": st.sampled_from([str(SAMPLES / "bird_audio.wav"), str(SAMPLES / "bird_image.jpg")]),
    "--threads": st.sampled_from(["1", "0", "-3", "x"]),
    "--device": st.sampled_from(["cpu", "cpu", "cuda", "tpu", ""]),
    "--pipeline": st.sampled_from(["tiny", "tiny", "nope", "/no/such.yaml"]),
}


@st.composite
def cli_args(draw):
    flags = draw(st.lists(st.sampled_from(sorted(CLI_FLAGS)), unique=True, max_size=5))
    args = [
        "generate",
        draw(st.one_of(st.sampled_from(["a dog", "", "\udcff", "x" * 50]), st.text(max_size=20))),
    ]
    for flag in flags:
        value = draw(CLI_FLAGS[flag])
        if value is None:
            continue
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        args += [flag, text]
    return args


@pytest.fixture(scope="module")
def cli_budget():
    return _Budget("cli")


PROGRESS = re.compile(r"^\s*\w+: +\d+%\|")  # a tqdm bar: "llm:  40%|..."


@_settings(600)
@given(args=cli_args())
def test_fuzz_cli(cli_budget, tmp_path_factory, capsys, args):
    """``anygen generate`` in-process: exit 0, or exit 2 with the error on one line; never a traceback."""
    if cli_budget.over():
        return
    from anygen.cli import main

    RUNS["cli"] += 1
    capsys.readouterr()  # what earlier cases printed
    out = tmp_path_factory.mktemp("fuzz-cli")
    # Cheap where a real run happens: few tokens and steps, tiny sizes.
    base = ["--out", str(out / "answer"), "--max-new-tokens", "3", "--steps", "1"]
    argv = [*args[:2], *base, *args[2:]]  # later flags win: the fuzzed ones override the cheap defaults
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    assert code in (0, 2), argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    if code == 2:  # the progress bars of what ran before it, then the error: one line
        assert len(lines) == 1 and ": error: " in lines[0], (argv, lines)
    assert "Traceback" not in err, (argv, err[-2000:])
    OUTCOMES[f"cli: exit {code}"] += 1


# -- the server: schema and handlers (no Ray cluster: the deployments' classes called in-process) ------------
class _Method:
    def __init__(self, fn) -> None:
        self.fn = fn

    def remote(self, *args, **kwargs):
        return _Response(self.fn(*args, **kwargs))


class _Response:
    def __init__(self, coroutine) -> None:
        self.coroutine = coroutine

    def __await__(self):
        return self.coroutine.__await__()

    def cancel(self) -> None:
        pass


class _Handle:
    """Stands for a Ray Serve handle: ``handle.method.remote(...)`` awaits the replica object's method."""

    def __init__(self, replica) -> None:
        self.replica = replica

    def __getattr__(self, name):
        return _Method(getattr(self.replica, name))


@pytest.fixture(scope="module")
def ingress():
    pytest.importorskip("ray.serve")
    from anygen.serve.app import pipeline_info
    from anygen.serve.config import ServeConfig
    from anygen.serve.deployments import GeneratorServer, Ingress, LLMServer
    from anygen.spec import load_spec

    config = ServeConfig.from_dict(
        {
            "limits": {
                "max_media_bytes": 300_000,
                "max_body_bytes": 1_000_000,
                "max_new_tokens": 6,
                "max_inference_steps": 2,
                "max_image_side": 64,
                "max_image_pixels": 4096,
                "max_num_frames": 4,
                "max_video_pixels": 16384,
                "max_audio_seconds": 0.5,
                "max_input_pixels": 1_000_000,
                "max_input_video_pixels": 5_000_000,
                "request_timeout_s": 60,
            }
        }
    )
    spec = load_spec("tiny")
    limits = config.limits.work_limits()
    llm = LLMServer.func_or_class(spec, "cpu", 1, limits)
    generators = {m: GeneratorServer.func_or_class(spec, m, "cpu", 1, limits) for m in spec.outputs}
    return Ingress.func_or_class(
        pipeline_info(spec, config),
        config.limits,
        _Handle(llm),
        {m: _Handle(g) for m, g in generators.items()},
        spec,
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _json_value(name: str):
    return _option_value(name).filter(
        lambda v: (
            isinstance(v, (type(None), bool, int, float, str, list, dict))
            and not isinstance(v, (np.integer, np.floating))
        )
    )


@st.composite
def bodies(draw):
    kind = draw(st.integers(0, 9))
    if 1 <= kind <= 4:  # a valid request
        body = {"prompt": draw(NICE_PROMPTS.filter(lambda p: "<" not in p))}
        body.update({k: list(v) if isinstance(v, tuple) else v for k, v in draw(valid_options()).items()})
        if draw(st.booleans()):
            body["images"] = [_b64(_small_png())]
        return json.dumps(body).encode()
    if kind == 0:
        return draw(
            st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"{", b"[]", b"null", b'"x"', b"{}"]))
        )
    body: dict = {}
    if draw(st.integers(0, 7)):
        body["prompt"] = draw(
            st.one_of(
                st.sampled_from(["a dog on a beach", "draw it"]),
                st.text(max_size=30),
                st.sampled_from(["a dog", "", "x" * 9000]),
                _scalar(),
            )
        )
    if draw(st.booleans()):  # valid options (the JSON kind of them)
        opts = draw(options().filter(lambda o: "generator" not in o))
        body.update({k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()})
    else:
        for name in draw(st.lists(st.sampled_from(OPTION_NAMES), unique=True, max_size=5)):
            body[name] = draw(_json_value(name))
    media = [_b64(SAMPLES.joinpath("bird_image.jpg").read_bytes()), _b64(_small_png()), _b64(b"junk")]
    media += [_b64(png_declaring(8000, 8000)), "@@@", "", "data:image/png;base64," + _b64(_small_png())]
    for field, extra in (
        ("images", []),
        ("audios", [_b64(_wav())]),
        ("videos", [_b64(SAMPLES.joinpath("test.mp4").read_bytes())]),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[field] = draw(st.one_of(st.lists(st.sampled_from(media + extra), max_size=2), _scalar()))
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["steps", "negative_prompt", "generator", ""]))] = 1
    return json.dumps(body, allow_nan=True, default=str).encode()


@pytest.fixture(scope="module")
def server_budget():
    return _Budget("server")


async def _post(ingress, body: bytes):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/generate",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return await ingress(Request(scope, receive))


@_settings(800)
@given(body=bodies())
def test_fuzz_server(ingress, server_budget, body):
    """``POST /v1/generate`` through the ingress and the replicas' own code: 200, or a 4xx whose body names
    the fields; never a 5xx for what a client sent."""
    if server_budget.over():
        return
    RUNS["server"] += 1
    response = asyncio.run(_post(ingress, body))
    payload = json.loads(response.body)
    assert response.status_code < 500, (body[:300], payload)
    OUTCOMES[f"server: {response.status_code}"] += 1
    if response.status_code == 422:
        assert payload["error"]["fields"], payload
    if response.status_code == 200:
        assert isinstance(payload["text"], str)


def test_fuzz_ran_cases(capsys):
    """Says how many cases each part ran (shown even under ``-q``)."""
    parts = ", ".join(f"{k} {v}" for k, v in RUNS.items())
    with capsys.disabled():
        print(f"\nfuzz: {sum(RUNS.values())} cases ran in about {TOTAL_SECONDS:g} s or less ({parts})")
        if os.environ.get("ANYGEN_FUZZ_VERBOSE"):
            print("\n".join(f"  {k}: {v}" for k, v in sorted(OUTCOMES.items())))
    assert sum(RUNS.values()) > 0
