"""Stable Audio and LTX-Video: layouts read from the configs, folders whose conditioning cannot be read, the
pipelines' own unconditional inputs, and the sizes each pipeline can make. (The checks every family passes are in
test_modern_generators.py.)"""

import importlib.util
import json

import numpy as np
import pytest
import torch

from anygen.errors import OptionError, WeightsError
from anygen.generators import build_generator
from anygen.generators.shapes import layout_from_config, layout_from_folder


@pytest.fixture(scope="module")
def audio_gen():
    return build_generator("stable-audio", config={}, seed=0)


@pytest.fixture(scope="module")
def video_gen():
    return build_generator("ltx-video", config={}, seed=0)


@pytest.fixture(scope="module")
def audio_folder(audio_gen, tmp_path_factory):
    path = tmp_path_factory.mktemp("stable-audio") / "g"
    audio_gen.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def video_folder(video_gen, tmp_path_factory):
    path = tmp_path_factory.mktemp("ltx-video") / "g"
    video_gen.save_pretrained(path)
    return path


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def _edit(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


# -- layouts ------------------------------------------------------------------------------------------------------
def test_stable_audio_layout_is_the_projected_t5_sequence(audio_gen, audio_folder):
    layout = audio_gen.layout
    assert layout.names == ("prompt_embeds",) and not layout.packed
    # (tokenizer model_max_length, projection conditioning_dim): 16 x 16 tiny, T5 itself is 32 wide.
    assert layout["prompt_embeds"].shape == (16, 16)
    assert audio_gen.pipeline.text_encoder.config.d_model == 32
    assert (
        layout_from_folder("stable-audio", audio_folder) == layout == layout_from_config("stable-audio", {})
    )
    knobs = {"condition_width": 24, "max_length": 12}
    other = build_generator("stable-audio", config=knobs, seed=0)
    assert (
        other.layout["prompt_embeds"].shape == (12, 24)
        and layout_from_config("stable-audio", knobs) == other.layout
    )
    cond = audio_gen.encode_conditioning(["a dog barks"])["prompt_embeds"]
    assert tuple(cond.shape) == (1, 16, 16)
    tokens = audio_gen.pipeline.tokenizer(["a dog barks"], padding="max_length", max_length=16).attention_mask
    padding = torch.tensor(tokens[0]) == 0
    assert padding.any() and torch.count_nonzero(cond[0, padding]) == 0  # the pipeline zeroes the padding
    assert torch.count_nonzero(cond[0, ~padding]) > 0


def test_ltx_layout_is_t5_at_max_sequence_length(video_gen, video_folder, tmp_path):
    layout = video_gen.layout
    assert layout.names == ("prompt_embeds",) and layout["prompt_embeds"].shape == (16, 32)
    assert layout_from_folder("ltx-video", video_folder) == layout == layout_from_config("ltx-video", {})
    longer = build_generator("ltx-video", config={"max_sequence_length": 20, "text_width": 24}, seed=0)
    assert longer.layout["prompt_embeds"].shape == (20, 24)
    assert tuple(longer.encode_conditioning(["x"])["prompt_embeds"].shape) == (1, 20, 24)
    longer.save_pretrained(
        tmp_path / "l"
    )  # max_sequence_length is not in diffusers' configs: the sidecar keeps it
    assert layout_from_folder("ltx-video", tmp_path / "l") == longer.layout


# -- folders whose conditioning cannot be read --------------------------------------------------------------------
def test_stable_audio_folder_errors_name_the_file_and_key(audio_folder, tmp_path):
    root = _copy(audio_folder, tmp_path)
    projection = root / "projection_model" / "config.json"
    kept = projection.read_text()
    _edit(projection, conditioning_dim=None)
    with pytest.raises(WeightsError, match=r"projection_model/config\.json does not say conditioning_dim"):
        layout_from_folder("stable-audio", root)
    projection.unlink()
    with pytest.raises(
        WeightsError, match=r"projection_model/config\.json is missing \(needed for conditioning_dim\)"
    ):
        layout_from_folder("stable-audio", root)
    projection.write_text(kept)
    _edit(projection, text_encoder_dim=48)
    with pytest.raises(
        WeightsError,
        match=r"T5 encoder gives width 32 \(text_encoder/config\.json d_model\) .* expects text_encoder_dim 48",
    ):
        layout_from_folder("stable-audio", root)
    projection.write_text(kept)
    _edit(root / "transformer" / "config.json", cross_attention_input_dim=20)
    with pytest.raises(
        WeightsError,
        match=r"conditioning_dim 16 but transformer/config\.json expects cross_attention_input_dim 20",
    ):
        layout_from_folder("stable-audio", root)
    _edit(root / "tokenizer" / "tokenizer_config.json", model_max_length=None)
    with pytest.raises(WeightsError, match=r"tokenizer/tokenizer_config\.json does not say model_max_length"):
        layout_from_folder("stable-audio", root)


def test_ltx_folder_errors_name_the_file_and_key(video_folder, tmp_path):
    root = _copy(video_folder, tmp_path)
    _edit(root / "transformer" / "config.json", caption_channels=64)
    with pytest.raises(
        WeightsError,
        match=r"T5 encoder gives width 32 \(text_encoder/config\.json d_model\) but transformer/config\.json "
        r"expects caption_channels 64",
    ):
        layout_from_folder("ltx-video", root)
    (root / "text_encoder" / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"text_encoder/config\.json is missing \(needed for d_model\)"):
        layout_from_folder("ltx-video", root)


@pytest.mark.skipif(importlib.util.find_spec("torchsde") is not None, reason="torchsde is installed")
def test_the_real_stable_audio_scheduler_needs_torchsde(audio_folder, tmp_path):
    from anygen.generators.modern_audio_video import StableAudioGenerator

    root = _copy(audio_folder, tmp_path)
    index = json.loads((root / "model_index.json").read_text())
    index["scheduler"][1] = "CosineDPMSolverMultistepScheduler"  # what stable-audio-open-1.0 ships
    (root / "model_index.json").write_text(json.dumps(index))
    _edit(root / "scheduler" / "scheduler_config.json", _class_name="CosineDPMSolverMultistepScheduler")
    with pytest.raises(
        WeightsError, match=r"cannot load stable-audio weights .*requires the torchsde library"
    ):
        StableAudioGenerator.from_pretrained(root)


# -- the pipelines' own unconditional inputs ----------------------------------------------------------------------
def test_stable_audio_follows_its_pipeline_with_guidance(audio_gen):
    """generate(encode_conditioning(text)) is exactly StableAudioPipeline(prompt=text): the conditioning is what
    its encode_prompt returns (projected once, not twice) and the unconditional input is its own (zeros)."""
    empty = audio_gen._empty_prompt_embeds(torch.device("cpu"), torch.float32)
    assert tuple(empty.shape) == (1, 16, 16) and torch.count_nonzero(empty) == 0
    text, length = "a hammer hits wood", 0.5
    assert not isinstance(audio_gen.pipeline.projection_model.text_projection, torch.nn.Identity)
    ours = audio_gen.generate(
        audio_gen.encode_conditioning([text]),
        guidance_scale=7.0,
        audio_length_in_s=length,
        generator=torch.Generator().manual_seed(3),
    )[0]
    assert ours.sample_rate == 2048 and ours.num_samples == int(length * 2048)
    with torch.no_grad():
        theirs = audio_gen.pipeline(
            text,
            guidance_scale=7.0,
            num_inference_steps=2,
            audio_end_in_s=length,
            generator=torch.Generator().manual_seed(3),
            output_type="np",
        ).audios[0]
    np.testing.assert_array_equal(ours.waveform, theirs.mean(axis=0))
    assert not isinstance(audio_gen.pipeline.projection_model.text_projection, torch.nn.Identity)  # put back
    # A negative conditioning that is not zeros is used as given.
    negative = audio_gen.encode_conditioning(["silence"])
    other = audio_gen.generate(
        audio_gen.encode_conditioning([text]),
        negative_prompt_embeds=negative,
        guidance_scale=7.0,
        audio_length_in_s=length,
        generator=torch.Generator().manual_seed(3),
    )[0]
    assert not np.array_equal(other.waveform, ours.waveform)


def test_ltx_follows_its_pipeline_with_guidance(video_gen):
    """LTX's unconditional input is T5 of "" with the pipeline's own mask (one token), while a projected sequence
    is dense (all ones). A caption that fills all tokens has an all-ones mask, so generating from its encoding is
    exactly LTXPipeline(prompt=caption)."""
    pipe = video_gen.pipeline
    with torch.no_grad():
        _, _, negative, mask = pipe.encode_prompt(
            [""], do_classifier_free_guidance=True, max_sequence_length=16, device=torch.device("cpu")
        )
    empty = video_gen._empty_prompt_embeds(torch.device("cpu"), torch.float32)
    torch.testing.assert_close(empty, negative, rtol=0, atol=0)
    assert 0 < int(mask.sum()) < 16  # the rule matters: its mask is not all ones
    caption = "a red ball rolls across the table"
    _, full, _, _ = pipe.encode_prompt(
        [caption], do_classifier_free_guidance=False, max_sequence_length=16, device=torch.device("cpu")
    )
    assert bool(full.all())
    ours = video_gen.generate(
        video_gen.encode_conditioning([caption]),
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(1),
    )[0]
    with torch.no_grad():
        theirs = pipe(
            caption,
            guidance_scale=3.0,
            num_inference_steps=2,
            height=32,
            width=32,
            num_frames=9,
            frame_rate=25.0,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
        ).frames[0]
    np.testing.assert_array_equal(ours.frames, (np.clip(theirs, 0, 1) * 255).round().astype(np.uint8))
    # The same unconditional embeddings with an all-ones mask give another video: the mask is the pipeline's.
    with torch.no_grad():
        dense = pipe(
            prompt_embeds=video_gen.encode_conditioning([caption])["prompt_embeds"],
            prompt_attention_mask=torch.ones(1, 16, dtype=torch.long),
            negative_prompt_embeds=empty,
            negative_prompt_attention_mask=torch.ones(1, 16, dtype=torch.long),
            guidance_scale=3.0,
            num_inference_steps=2,
            height=32,
            width=32,
            num_frames=9,
            frame_rate=25.0,
            max_sequence_length=16,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
        ).frames[0]
    assert not np.array_equal(dense, theirs)


# -- sizes --------------------------------------------------------------------------------------------------------
def test_ltx_sizes_are_checked_and_named(video_gen):
    cond = video_gen.encode_conditioning(["x"])
    with pytest.raises(
        OptionError, match=r"num_frames: 8 frames; the ltx-video generator makes 8k \+ 1"
    ) as err:
        video_gen.generate(cond, num_frames=8, guidance_scale=1.0)
    assert err.value.fields == ["num_frames"]
    with pytest.raises(OptionError, match=r"height: 48 is not a positive multiple of 32") as err:
        video_gen.generate(cond, height=48, guidance_scale=1.0)
    assert err.value.fields == ["height"]
    video = video_gen.generate(cond, num_frames=17, width=64, guidance_scale=1.0)[0]
    assert video.frames.shape == (17, 32, 64, 3) and video.fps == 25.0


def test_stable_audio_length_is_checked_and_named(audio_gen):
    cond = audio_gen.encode_conditioning(["x"])
    with pytest.raises(OptionError, match=r"audio_length_in_s: 2 s; .* to 1 s") as err:
        audio_gen.generate(cond, audio_length_in_s=2.0, guidance_scale=1.0)
    assert err.value.fields == ["audio_length_in_s"]
    assert audio_gen.generate(cond, guidance_scale=1.0)[0].duration == 1.0  # native: sample_size x hop / rate
