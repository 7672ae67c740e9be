"""The call options (anygen.options): one validated object, checked before any model runs; limits on a call's
work and on decoding inputs; the LLM's context window; and valid calls giving exactly what they gave before."""

import hashlib

import numpy as np
import pytest
import torch
from bombs import png_declaring

from anygen import AnyToAnyPipeline
from anygen.errors import (
    AnyGenError,
    ContextLengthError,
    Interrupted,
    LimitError,
    MediaError,
    OptionError,
    SpecError,
)
from anygen.generation import SamplingOptions, sample_next
from anygen.media import Video, load_image
from anygen.options import CallOptions, Limits
from anygen.spec import PipelineSpec, load_spec


@pytest.fixture
def fresh_pipe():
    """A tiny pipeline with nothing built yet (to show that a refused call builds no model)."""
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the options object ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field, says",
    [
        (dict(num_inference_steps=-1), "num_inference_steps", "an integer in 1..1000, got -1"),
        (dict(num_inference_steps=0), "num_inference_steps", "an integer in 1..1000, got 0"),
        (dict(num_inference_steps=2.0), "num_inference_steps", "got 2.0 (a float)"),
        (dict(num_inference_steps={"image": 1, "bogus": 3}), "num_inference_steps.bogus", "not a modality"),
        (dict(num_inference_steps={"video": True}), "num_inference_steps.video", "(a bool)"),
        (dict(guidance_scale=-5), "guidance_scale", "in [0, 1000], got -5.0"),
        (dict(guidance_scale=float("nan")), "guidance_scale", "got nan"),
        (dict(guidance_scale="high"), "guidance_scale", "got 'high' (a str)"),
        (dict(guidance_scale={"audio": float("inf")}), "guidance_scale.audio", "got inf"),
        (dict(max_new_tokens=1.5), "max_new_tokens", "got 1.5 (a float)"),
        (dict(max_new_tokens=0), "max_new_tokens", ">= 1"),
        (dict(temperature=float("inf")), "temperature", "finite number >= 0"),
        (dict(temperature=float("nan")), "temperature", "got nan"),
        (dict(temperature=-0.1), "temperature", ">= 0"),
        (dict(top_p=0), "top_p", "in (0, 1]"),
        (dict(top_p=1.5), "top_p", "in (0, 1]"),
        (dict(seed=2**64), "seed", "in 0..2**63-1"),
        (dict(seed=-1), "seed", "in 0..2**63-1"),
        (dict(seed=1.5), "seed", "(a float)"),
        (dict(seed="0"), "seed", "'0' (a str)"),
        (dict(seed=True), "seed", "(a bool)"),
        (dict(height=0, width=0), "height", "in 1..16384, got 0"),
        (dict(height=-8, width=64), "height", "got -8"),
        (dict(height=64), "height", "given without width; give height and width together"),
        (dict(width=64), "width", "given without height"),
        (dict(num_frames=0), "num_frames", "in 1..1024, got 0"),
        (dict(num_frames=-1), "num_frames", "in 1..1024, got -1"),
        (dict(num_frames={"video": 4}), "num_frames", "only num_inference_steps and guidance_scale"),
        (dict(audio_length_in_s=0), "audio_length_in_s", "in (0, 3600]"),
        (dict(audio_length_in_s=float("nan")), "audio_length_in_s", "got nan"),
        (dict(output_modalities=["image", "smell"]), "output_modalities[1]", "'smell' is not an output"),
        (dict(output_modalities=5), "output_modalities", "expected a list"),
        (dict(only_requested="yes"), "only_requested", "True or False"),
        (dict(generator=[]), "generator", "an empty list"),
        (dict(generator="cpu"), "generator", "torch.Generator"),
        (dict(seed=0, generator=torch.Generator()), "generator", "seed or generator, not both"),
    ],
)
def test_each_bad_option_is_named_with_what_it_accepts(kwargs, field, says):
    with pytest.raises(OptionError) as err:
        CallOptions(**kwargs)
    assert field in err.value.fields
    assert says in str(err.value)
    assert isinstance(err.value, AnyGenError) and isinstance(err.value, ValueError)


def test_options_are_normalised_and_all_problems_reported_together():
    opts = CallOptions(
        output_modalities="image",
        seed=np.int64(3),
        guidance_scale={"image": 5, "audio": None},
        temperature=np.float32(0.5),
        only_requested=np.bool_(True),
    )
    assert opts.output_modalities == ("image",) and type(opts.seed) is int and opts.seed == 3
    assert opts.guidance_scale == {"image": 5.0, "audio": None} and opts.only_requested is True
    assert opts.for_modality("image") == {"guidance_scale": 5.0} and opts.for_modality("audio") == {}
    assert CallOptions(output_modalities=["audio", "image", "audio"]).output_modalities == ("audio", "image")
    with pytest.raises(OptionError) as err:
        CallOptions(seed="x", top_p=2, num_frames=0)
    assert err.value.fields == ["seed", "top_p", "num_frames"]
    with pytest.raises(OptionError, match="steps: unknown option; the options are output_modalities"):
        CallOptions.from_kwargs(steps=3)
    # replace() and merged() check again; merged() keeps what is not given.
    assert CallOptions(seed=1).merged(seed=None, top_p=0.5) == CallOptions(seed=1, top_p=0.5)
    with pytest.raises(OptionError):
        CallOptions(seed=1).replace(top_p=0)


# -- hard caps: they hold with no Limits at all ------------------------------------------------------------------
# Each of these escaped before as a raw error or a silently wrong result (the probes of the hardening audit):
# a TypeError from randn, a storage or allocation overflow, numpy's ValueError, a MemoryError, a schedule of
# zero denoising steps (an image written, exit 0), NaN pixels.
HARD_CAPS = [
    (dict(audio_length_in_s=1e300), "audio_length_in_s", "in (0, 3600] (seconds), got 1e+300"),
    (dict(audio_length_in_s=3600.5), "audio_length_in_s", "in (0, 3600]"),
    (dict(height=2**40, width=64), "height", f"an integer in 1..16384, got {2**40}"),
    (dict(height=64, width=16392), "width", "an integer in 1..16384, got 16392"),
    (dict(num_frames=2**40), "num_frames", "an integer in 1..1024"),
    (dict(num_frames=1025), "num_frames", "an integer in 1..1024, got 1025"),
    (dict(num_inference_steps=2**62), "num_inference_steps", "an integer in 1..1000"),
    (dict(num_inference_steps=2**31), "num_inference_steps", "an integer in 1..1000"),
    (dict(num_inference_steps=2**63 - 1), "num_inference_steps", "an integer in 1..1000"),
    (dict(num_inference_steps=1001), "num_inference_steps", "an integer in 1..1000, got 1001"),
    (dict(num_inference_steps={"audio": 5000}), "num_inference_steps.audio", "in 1..1000"),
    (dict(guidance_scale=1e308), "guidance_scale", "a finite number in [0, 1000], got 1e+308"),
    (dict(guidance_scale={"video": 1000.5}), "guidance_scale.video", "in [0, 1000]"),
]


@pytest.mark.parametrize("kwargs, field, says", HARD_CAPS)
def test_hard_caps_hold_without_limits(fresh_pipe, kwargs, field, says):
    with pytest.raises(OptionError) as err:
        CallOptions(**kwargs)
    assert err.value.fields == [field] and says in str(err.value), str(err.value)
    assert not isinstance(err.value, LimitError)  # not a front end's limit: a rule of the option
    assert fresh_pipe.limits.max_inference_steps is None  # the Python API's default: no work limits
    with pytest.raises(OptionError) as err:
        fresh_pipe("a dog", **kwargs)
    assert err.value.fields == [field]
    assert fresh_pipe.loaded_components == []


def test_the_caps_themselves_are_valid():
    opts = CallOptions(
        num_inference_steps=1000,
        height=16384,
        width=16384,
        num_frames=1024,
        audio_length_in_s=3600.0,
        guidance_scale=1000.0,
        max_new_tokens=10**9,  # no cap of its own: the LLM's context window bounds it (ContextLengthError)
    )
    assert opts.num_inference_steps == 1000 and opts.guidance_scale == 1000.0


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "dpmsolver"])
def test_the_most_steps_make_a_valid_schedule(scheduler):
    """The most steps a generator takes (from its scheduler's config) give a schedule inside the noise
    schedule; one more is what diffusers refuses or schedules past its end (an IndexError at the first step)."""
    from anygen.generators.shapes import max_steps_of
    from anygen.generators.tiny import resolve_tiny_config, tiny_scheduler, tiny_scheduler_config

    knobs = {**resolve_tiny_config("zeroscope", None), "scheduler": scheduler}
    most = max_steps_of(tiny_scheduler_config(knobs))
    sched = tiny_scheduler(knobs)
    assert max_steps_of(dict(sched.config)) == most  # the config a saved folder holds says the same
    assert most == (1000 if scheduler == "dpmsolver" else 999)
    sched.set_timesteps(most)
    assert (
        len(sched.timesteps) >= most and 0 <= int(sched.timesteps.min()) <= int(sched.timesteps.max()) < 1000
    )
    if most < 1000:
        sched.set_timesteps(most + 1)
        assert int(sched.timesteps.max()) >= 1000


def test_steps_are_checked_against_each_generators_scheduler(tmp_path, fresh_pipe):
    """A generator takes no more steps than its scheduler (read from scheduler/scheduler_config.json)."""
    from anygen.generators.shapes import geometry_from_folder
    from anygen.options import check_call, check_defaults

    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text('{"num_train_timesteps": 500}')
    geo = geometry_from_folder("image", tmp_path)
    assert geo.max_steps == 500
    kw = dict(pipeline="p", outputs=("image", "audio"), geometry={"image": geo}, defaults={})
    check_call(CallOptions(num_inference_steps=500), **kw)
    with pytest.raises(OptionError) as err:
        check_call(CallOptions(num_inference_steps=501), **kw)
    assert err.value.fields == ["num_inference_steps"]
    assert "501 steps, more than the image generator's scheduler takes (at most 500" in str(err.value)
    with pytest.raises(OptionError) as err:
        check_call(CallOptions(num_inference_steps={"image": 600, "audio": 600}), **kw)
    assert err.value.fields == ["num_inference_steps.image"]
    problems = check_defaults("d", {"num_inference_steps": 700}, ("num_inference_steps",), geo, "image")
    assert problems and "at most 500" in problems[0][1]
    # The tiny pipeline: 999 (1000 timesteps, steps_offset 1), checked before any model is built.
    fresh_pipe.check_inputs("x", num_inference_steps=999)
    with pytest.raises(OptionError, match="1000 steps, more than the image generator's scheduler takes"):
        fresh_pipe("x", num_inference_steps=1000)
    assert fresh_pipe.loaded_components == []


@pytest.mark.parametrize("kind", ["image", "video", "audio"])
def test_non_finite_media_are_refused_never_cast(kind):
    """A generator whose output holds NaN (here: NaN weights in its VAE's last layer) raises GenerationError;
    nothing becomes black pixels or a NaN waveform."""
    from anygen.errors import GenerationError

    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    gen = pipe.generator(kind)
    with torch.no_grad():
        gen.pipeline.vae.decoder.conv_out.weight.fill_(float("nan"))
    sizes = {"image": {}, "video": dict(num_frames=2), "audio": dict(audio_length_in_s=0.1)}[kind]
    cond = torch.zeros(1, *gen.condition_shape)
    with pytest.raises(GenerationError) as err:
        pipe.generate_media(kind, cond, [0], seed=0, num_inference_steps=1, **sizes)
    assert f"the {kind} generator produced non-finite values (NaN)" in str(err.value)
    assert "try a smaller guidance_scale" in str(err.value) and err.value.fields == ["guidance_scale"]


def test_cli_writes_nothing_for_non_finite_media(tmp_path, capsys, monkeypatch):
    from anygen.cli import main

    load = AnyToAnyPipeline.from_pretrained.__func__

    def poisoned(cls, *args, **kwargs):
        pipe = load(cls, *args, **kwargs)
        with torch.no_grad():
            pipe.generator("image").pipeline.vae.decoder.conv_out.weight.fill_(float("nan"))
        return pipe

    monkeypatch.setattr(AnyToAnyPipeline, "from_pretrained", classmethod(poisoned))
    out = tmp_path / "o"
    argv = [
        "generate",
        "a dog",
        "--want",
        "image",
        "--only-requested",
        "--steps",
        "1",
        "--max-new-tokens",
        "3",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the progress bars, then the error on one line
    assert err[-1].startswith("anygen: error: the image generator produced non-finite values (NaN)"), err
    assert not any("Traceback" in line for line in err)
    assert not out.exists() or not list(out.iterdir())


# -- through the pipeline: checked before any model runs --------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(height=65, width=64), "height"),
        (dict(height=36, width=36), "width"),
        (dict(height=64), "height"),
        (dict(guidance_scale=-5), "guidance_scale"),
        (dict(num_frames=0), "num_frames"),
        (dict(audio_length_in_s=0.001), "audio_length_in_s"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(seed=2**64), "seed"),
        (dict(generator=[torch.Generator(), torch.Generator()]), "generator"),
        (dict(output_modalities=("smell",)), "output_modalities[0]"),
    ],
)
def test_the_issue_probes_get_a_clear_error_before_any_model_is_built(fresh_pipe, kwargs, field):
    with pytest.raises(OptionError) as err:
        fresh_pipe("a dog", **kwargs)
    assert field in err.value.fields
    assert fresh_pipe.loaded_components == []
    with pytest.raises(OptionError):
        fresh_pipe.check_inputs("a dog", **kwargs)


def test_sizes_follow_each_generators_vae(fresh_pipe):
    with pytest.raises(OptionError, match=r"65 is not a multiple of 8 \(the image and video generators"):
        fresh_pipe.check_inputs("x", height=65, width=64)
    out = fresh_pipe(
        "x",
        output_modalities=("image",),
        seed=0,
        max_new_tokens=2,
        num_inference_steps=1,
        height=32,
        width=48,
    )
    assert out.images[0].size == (48, 32)
    # The smallest size: the UNet's deepest feature map 2x2 (tiny: VAE x4, one downsampling: 16 pixels).
    with pytest.raises(OptionError, match="8 is smaller than the image generator's smallest size, 16"):
        fresh_pipe.check_inputs("x", height=8, width=16)
    # The shortest audio is one latent row: 2 vocoder frames of 10 ms for the tiny AudioLDM.
    with pytest.raises(OptionError, match="shorter than the audio generator's shortest, 0.02 s"):
        fresh_pipe.check_inputs("x", audio_length_in_s=0.019)
    fresh_pipe.check_inputs("x", audio_length_in_s=0.02)


def test_lone_surrogate_prompt_and_bad_prompt_types(fresh_pipe):
    with pytest.raises(AnyGenError, match="prompt: not valid text"):
        fresh_pipe("a \ud800 dog")
    with pytest.raises(AnyGenError, match="prompt: expected a string"):
        fresh_pipe(b"bytes")
    with pytest.raises(AnyGenError, match=r"prompt\[1\]: expected a string"):
        fresh_pipe(["ok", 3])
    assert fresh_pipe.loaded_components == []


def test_generator_list_per_prompt_as_diffusers(tiny_pipe):
    kw = dict(output_modalities=("image",), max_new_tokens=4, num_inference_steps=1)
    batch = tiny_pipe(
        ["a cat", "a dog"],
        generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
        **kw,
    )
    for out, (prompt, seed) in zip(batch, [("a cat", 1), ("a dog", 2)], strict=True):
        alone = tiny_pipe(prompt, generator=torch.Generator().manual_seed(seed), **kw)
        assert out.text == alone.text
        np.testing.assert_allclose(
            np.asarray(out.images[0], float), np.asarray(alone.images[0], float), atol=2
        )
    with pytest.raises(OptionError, match="a list of 1 generators for 2 prompt"):
        tiny_pipe(["a", "b"], generator=[torch.Generator()], **kw)


def test_generate_media_checks_its_options(tiny_pipe):
    cond = torch.zeros(1, 77, 32)
    with pytest.raises(OptionError, match="not an option of generate_media"):
        tiny_pipe.generate_media("image", cond, [0], seed=0, max_new_tokens=3)
    with pytest.raises(OptionError, match="num_inference_steps"):
        tiny_pipe.generate_media("image", cond, [0], seed=0, num_inference_steps=0)
    with pytest.raises(OptionError, match="'smell' is not an output"):
        tiny_pipe.generate_media("smell", cond, [0], seed=0)


def _spec(**generator_defaults) -> dict:
    data = load_spec("tiny").model_dump(mode="json", exclude={"root"})
    data["outputs"]["image"]["generator"]["defaults"] = generator_defaults
    return data


@pytest.mark.parametrize(
    "defaults, says",
    [
        (dict(num_inference_steps=0), "num_inference_steps: expected an integer in 1..1000"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(height=65, width=64), "height: 65 is not a multiple of 8"),
        (dict(height=64), "give height and width together"),
        (dict(bogus=3), "bogus"),
    ],
)
def test_spec_defaults_follow_the_same_rules(defaults, says):
    with pytest.raises(SpecError) as err:
        AnyToAnyPipeline(PipelineSpec.from_dict(_spec(**defaults)))
    assert "outputs.image.generator" in str(err.value) and says in str(err.value)


def test_llm_defaults_are_checked():
    data = _spec()
    data["llm"]["defaults"] = {"temperature": -1, "max_new_tokens": 2.5}
    with pytest.raises(SpecError) as err:
        AnyToAnyPipeline(PipelineSpec.from_dict(data))
    assert "llm.defaults.temperature" in str(err.value) and "llm.defaults.max_new_tokens" in str(err.value)


# -- limits ---------------------------------------------------------------------------------------------------
def test_work_limits_name_the_option(fresh_pipe):
    limits = Limits.service()
    cases = [
        (dict(num_inference_steps={"image": 500}), ["num_inference_steps.image"]),
        (dict(max_new_tokens=10_000), ["max_new_tokens"]),
        (dict(height=2048, width=2048), ["height", "width"]),
        (dict(num_frames=1000), ["num_frames"]),
        (dict(height=512, width=512, num_frames=64), ["height", "width", "num_frames"]),
        (dict(audio_length_in_s=600.0), ["audio_length_in_s"]),
    ]
    for kwargs, fields in cases:
        with pytest.raises(LimitError) as err:
            fresh_pipe("x", limits=limits, **kwargs)
        assert err.value.fields == fields, kwargs
        assert "limits.max_" in str(err.value)
    with pytest.raises(LimitError, match="100000 characters, more than limits.max_prompt_chars=8000"):
        fresh_pipe("x" * 100_000, limits=limits)
    assert fresh_pipe.loaded_components == []
    # The Python API has none of these limits by default; pipe.limits sets them for every call.
    assert Limits().max_inference_steps is None and fresh_pipe.limits == Limits()
    fresh_pipe.limits = Limits(max_inference_steps=5)
    with pytest.raises(LimitError, match="num_inference_steps: 6 steps"):
        fresh_pipe.check_inputs("x", num_inference_steps=6)
    with pytest.raises(OptionError, match="limits.max_seconds"):
        Limits(max_seconds=0)


def test_interrupt_and_time_limit_stop_a_call(tiny_pipe):
    with pytest.raises(Interrupted):
        tiny_pipe("x", seed=0, interrupt=lambda: True)
    with pytest.raises(Interrupted, match="limits.max_seconds"):
        tiny_pipe("x", seed=0, limits=Limits(max_seconds=1e-6))
    steps = []

    def interrupt():
        return len(steps) >= 2

    with pytest.raises(Interrupted):
        tiny_pipe.generate_media(
            "image",
            torch.zeros(1, 77, 32),
            [0],
            seed=0,
            num_inference_steps=50,
            callback=lambda done, total: steps.append(done),
            interrupt=interrupt,
        )
    assert steps == [1, 2]


# -- context window ---------------------------------------------------------------------------------------------
def test_context_length_is_checked(tiny_pipe):
    with pytest.raises(ContextLengthError, match=r"more than the LLM's context of 1024") as err:
        tiny_pipe("x", max_new_tokens=2000)
    assert err.value.fields == ["prompt"] and err.value.window == 1024
    with pytest.raises(ContextLengthError, match=r"prompt\[1\]"):
        tiny_pipe(["short", "y" * 1100], max_new_tokens=2)


def test_chat_drops_the_oldest_turns_to_fit():
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    chat = pipe.chat(seed=0, max_new_tokens=8)
    for i in range(3):
        chat.send(f"{i} " + "z" * 300)
    assert chat.dropped_turns >= 2 and len(chat.turns) <= 4
    assert chat.turns[-2].text.startswith("2 ")
    with pytest.raises(ContextLengthError):
        chat.send("w" * 2000)
    with pytest.raises(OptionError, match="top_p"):
        pipe.chat(top_p=0)


# -- sampling at extreme temperatures ------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-30, 1e30, 1.7e308])
def test_extreme_temperatures_sample_a_valid_token(temperature):
    logits = torch.randn(40, generator=torch.Generator().manual_seed(0))
    logits[5] = float("-inf")  # banned, as later signal tokens are
    for top_p in (1.0, 0.5, 1e-300):
        token = sample_next(logits, SamplingOptions(temperature=temperature, top_p=top_p), torch.Generator())
        assert 0 <= token < 40 and token != 5


# -- inputs: pixel limits before decoding ----------------------------------------------------------------------
def test_decompression_bombs_are_refused_unread(fresh_pipe):
    with pytest.raises(MediaError, match=r"8000x8000 = 64000000 pixels, more than the limit of 50000000"):
        load_image(png_declaring(8000, 8000), name="images[0]")
    with pytest.raises(MediaError, match=r"images\[0\].*too large to decode") as err:
        load_image(png_declaring(14000, 14000), name="images[0]")
    assert "object at 0x" not in str(err.value)
    with pytest.raises(MediaError, match="too large to decode"):  # no limit of ours: PIL's own, mapped
        load_image(png_declaring(10000, 10000), max_pixels=None)
    with pytest.raises(MediaError, match="more than the limit of 1000"):
        fresh_pipe("x", images=[png_declaring(40, 40)], limits=Limits(max_input_pixels=1000))
    with pytest.raises(MediaError, match=r"images\[0\]") as err:
        fresh_pipe("x", images=[b"not an image at all"])
    assert "object at 0x" not in str(err.value) and "BytesIO" not in str(err.value)


def test_video_frames_are_limited(tmp_path):
    path = tmp_path / "clip.mp4"
    Video(np.zeros((6, 16, 16, 3), np.uint8), 4.0).save(path)
    assert Video.load(path).num_frames == 6
    with pytest.raises(MediaError, match="16x16 = 256 pixels, more than the limit of 100"):
        Video.load(path, max_pixels=100)
    with pytest.raises(MediaError, match="more than 600 pixels in all its frames"):
        Video.load(path, max_video_pixels=600)


# -- valid calls are unchanged ---------------------------------------------------------------------------------
# Recorded from the code before the options object existed (commit 88f61f4), with the same calls: the sha256 of
# the answer's text, of each image's pixels, of each video's frames and of each waveform (first 16 hex digits).
BEFORE = {
    "text_image": {"text": "65d19099f7bc477d", "images": ["308631c138e5f1db"]},
    "all_kinds": {
        "text": "a4ecc162b32f46ec",
        "images": ["8fd9b4895021279a"],
        "videos": ["adbedf4a4fb133ad"],
        "audios": ["9544b620b7ac8fc5"],
    },
    "options": {
        "text": "83d544ccc223c057",
        "images": ["58f78707d3a0fc4b"],
        "videos": ["cd0a886673527495"],
        "audios": ["5c5dc625c27b1e5e"],
    },
    "greedy_video": {"text": "b08b332f5c0550f0", "videos": ["6ba543a5b4b51739"]},
    "inputs": {"text": "fc98e8972b6933f8"},
    "generator": {"text": "cf7f18b3357e0c3c", "images": ["e0170e661286ad35"]},
    "batch": [
        {"text": "7f1ea272ec39de3f", "images": ["de90c5c0780b434b"]},
        {"text": "7f1ea272ec39de3f", "images": ["8bd9ce5c0e6b168c"]},
    ],
    "chat": [{"text": "fe65f38595756633", "images": ["f9f5c853517ad916"]}, {"text": "fe65f38595756633"}],
}


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _summary(out) -> dict:
    found = {
        "text": _h(out.text.encode("utf-8", "surrogatepass")),
        "images": [_h(np.ascontiguousarray(np.asarray(i)).tobytes()) for i in out.images],
        "videos": [_h(np.ascontiguousarray(v.frames).tobytes()) for v in out.videos],
        "audios": [_h(np.ascontiguousarray(a.waveform).tobytes()) for a in out.audios],
    }
    return {k: v for k, v in found.items() if v}


def test_valid_calls_give_what_they_gave_before(samples):
    pipe = AnyToAnyPipeline.from_pretrained("tiny")
    pipe.set_progress_bar_config(disable=True)
    assets = samples / "assets"
    calls = {
        "text_image": lambda: pipe("a dog on a beach", output_modalities=("image",), seed=0),
        "all_kinds": lambda: pipe(
            "all of it", output_modalities=("image", "video", "audio"), seed=1, max_new_tokens=8
        ),
        "options": lambda: pipe(
            "a cat",
            output_modalities=("image", "audio"),
            seed=3,
            num_inference_steps={"image": 3, "audio": 2},
            guidance_scale=1.0,
            height=32,
            width=32,
            audio_length_in_s=0.5,
            temperature=0.7,
            top_p=0.8,
            max_new_tokens=6,
        ),
        "greedy_video": lambda: pipe(
            "a wave", output_modalities=("video",), seed=2, temperature=0, num_frames=3, max_new_tokens=5
        ),
        "inputs": lambda: pipe(
            "what is this bird saying?",
            images=[assets / "bird_image.jpg"],
            audios=[assets / "bird_audio.wav"],
            seed=4,
            max_new_tokens=10,
        ),
        "generator": lambda: pipe(
            "a tree",
            output_modalities=("image",),
            generator=torch.Generator().manual_seed(7),
            max_new_tokens=6,
        ),
        "batch": lambda: pipe(["a cat", "a dog"], output_modalities=("image",), seed=5, max_new_tokens=6),
    }
    found = {}
    for name, call in calls.items():
        out = call()
        found[name] = [_summary(o) for o in out] if isinstance(out, list) else _summary(out)
    chat = pipe.chat(seed=6, max_new_tokens=6)
    first = chat.send("hello", output_modalities=("image",))
    second = chat.send("and again", audios=[assets / "bird_audio.wav"])
    found["chat"] = [_summary(first), _summary(second)]
    assert found == BEFORE


# -- the CLI: the same options, one line and exit 2 before anything is written -------------------------------
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--steps", "0"], "num_inference_steps: expected an integer in 1..1000, got 0"),
        (["--height", "65", "--width", "64"], "height: 65 is not a multiple of 8"),
        (["--height", "64"], "height: given without width"),
        (["--guidance-scale", "nan"], "guidance_scale: expected a finite number in [0, 1000]"),
        (["--temperature", "inf"], "temperature"),
        (["--audio-length", "0"], "audio_length_in_s"),
        (["--audio-length", "0.001"], "audio_length_in_s: 0.001 s is shorter"),
        (["--num-frames", "0"], "num_frames"),
        (["--seed", str(2**64)], "seed: expected an integer in 0..2**63-1"),
        (["--max-new-tokens", "5000"], "more than the LLM's context of 1024"),
        # The probes of the hardening audit (each worked by hand; pinned here).
        (["--steps", "-1"], "num_inference_steps: expected an integer in 1..1000, got -1"),
        (["--height", "0", "--width", "64"], "height: expected an integer in 1..16384, got 0"),
        (["--height", "-8", "--width", "64"], "height: expected an integer in 1..16384, got -8"),
        (["--guidance-scale", "-5"], "guidance_scale: expected a finite number in [0, 1000], got -5.0"),
        (["--guidance-scale", "high"], "argument --guidance-scale: invalid float value: 'high'"),
        (["--max-new-tokens", "1.5"], "argument --max-new-tokens: invalid int value: '1.5'"),
        (["--temperature", "nan"], "temperature: expected a finite number >= 0 (0: greedy), got nan"),
        (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
        (["--num-frames", "-1"], "num_frames: expected an integer in 1..1024, got -1"),
        (["--audio-length", "nan"], "audio_length_in_s: expected a finite number in (0, 3600]"),
        # The hard caps, with no limits (the CLI has none by default).
        (["--audio-length", "1e300"], "audio_length_in_s: expected a finite number in (0, 3600]"),
        (["--height", str(2**40), "--width", str(2**40)], "height: expected an integer in 1..16384"),
        (["--num-frames", str(2**40)], "num_frames: expected an integer in 1..1024"),
        (["--steps", str(2**62)], "num_inference_steps: expected an integer in 1..1000"),
        (["--steps", str(2**63 - 1)], "num_inference_steps: expected an integer in 1..1000"),
        (["--guidance-scale", "1e308"], "guidance_scale: expected a finite number in [0, 1000]"),
    ],
)
def test_cli_options_are_checked_before_generating(tmp_path, capsys, args, fragment):
    from anygen.cli import main

    out = tmp_path / "o"
    try:
        code = main(["generate", "a dog", "--out", str(out), *args])
    except SystemExit as exit:  # argparse's own refusals (a value that is not a number at all)
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert err[0].startswith("anygen: error: ") or err[0].startswith("anygen generate: error: "), err
    assert not out.exists()
