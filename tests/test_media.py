import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from anygen.errors import MediaError
from anygen.media import Audio, Video, load_image, load_media, save_image

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nextgpt-samples" / "assets"


def gradient_frames(t: int, h: int, w: int) -> np.ndarray:
    """Smooth, frame-varying content that survives lossy compression."""
    y, x = np.mgrid[0:h, 0:w]
    frames = [np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 20 + 25 * i)], axis=-1) for i in range(t)]
    return np.asarray(frames).round().astype(np.uint8)


def sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def peak_hz(audio: Audio) -> float:
    spectrum = np.abs(np.fft.rfft(audio.waveform))
    return float(np.fft.rfftfreq(audio.num_samples, 1 / audio.sample_rate)[spectrum.argmax()])


# ----------------------------------------------------------------------------- images


def test_image_png_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = save_image(load_image(array), tmp_path / "sub" / "x.png")
    assert path.is_file()
    np.testing.assert_array_equal(np.asarray(load_image(path)), array)
    np.testing.assert_array_equal(np.asarray(load_image(path.read_bytes())), array)
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), array)


def test_load_image_from_gray_float_and_pil():
    gray = load_image(np.array([[0, 255]], dtype=np.uint8))
    assert gray.mode == "RGB" and gray.size == (2, 1)
    assert np.asarray(gray)[0, 1].tolist() == [255, 255, 255]
    floats = load_image(np.full((2, 3, 3), 0.5, dtype=np.float32))
    assert np.asarray(floats)[0, 0].tolist() == [128, 128, 128]
    rgba = Image.new("RGBA", (4, 5), (10, 20, 30, 40))
    assert load_image(rgba).mode == "RGB"
    assert np.asarray(load_image(rgba))[0, 0].tolist() == [10, 20, 30]


def test_load_sample_image():
    image = load_image(ASSETS / "bird_image.jpg")
    assert image.mode == "RGB"
    assert image.size == (640, 855)


@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((0, 4, 3), np.uint8), r"<array> \(query\) is empty"),
        (np.zeros((4, 4, 2), np.uint8), r"<array> \(query\) has shape \(4, 4, 2\); expected"),
        (np.full((2, 2, 3), 2.0), r"outside \[0, 1\]"),
        (b"", r"<bytes> \(query\) is empty"),
        (b"not an image at all", r"<bytes> \(query\) could not be decoded.*expected a valid image"),
        (42, r"unsupported type int"),
    ],
)
def test_load_image_errors(source, match):
    with pytest.raises(MediaError, match=match):
        load_image(source, name="query")


def test_load_image_missing_and_corrupt_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaError, match=f"{missing}.*not found"):
        load_image(missing)
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(MediaError, match=f"{corrupt}.*could not be decoded"):
        load_image(corrupt)


def test_save_image_needs_suffix(tmp_path):
    with pytest.raises(MediaError, match="suffix"):
        save_image(Image.new("RGB", (2, 2)), tmp_path / "noext")


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("subtype, atol", [("PCM_16", 1 / 32767), ("FLOAT", 0.0)])
def test_audio_wav_round_trip(tmp_path, subtype, atol):
    audio = Audio(sine(440, 8000, 0.5), 8000)
    path = audio.save(tmp_path / "a.wav", subtype=subtype)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, subtype, "WAV")
    back = Audio.load(path)
    assert back.sample_rate == 8000 and back.waveform.dtype == np.float32
    np.testing.assert_allclose(back.waveform, audio.waveform, atol=atol)
    assert back.duration == pytest.approx(0.5)
    from_bytes = Audio.load(path.read_bytes())
    np.testing.assert_array_equal(from_bytes.waveform, back.waveform)


def test_audio_pcm16_save_clips_out_of_range(tmp_path):
    path = Audio(np.array([2.0, -3.0, 0.25], np.float32), 100).save(tmp_path / "c.wav")
    data, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_allclose(data, [32767 / 32768, -1.0, 0.25], atol=1e-4)


@pytest.mark.parametrize("suffix, codec", [(".mp3", "libmp3lame"), (".m4a", "aac")])
def test_audio_compressed_formats(tmp_path, suffix, codec):
    """MP3 (libsndfile >= 1.1 reads it) and M4A/AAC (only FFmpeg does, so this exercises the PyAV path)."""
    av = pytest.importorskip("av")
    rate, wave = 22050, sine(440, 22050)
    path = tmp_path / f"a{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for start in range(0, rate, 1024):  # AAC takes 1024-sample frames
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    audio = Audio.load(path)
    assert audio.sample_rate == rate
    assert audio.duration == pytest.approx(1.0, abs=0.1)
    assert peak_hz(audio) == pytest.approx(440, abs=2)
    np.testing.assert_array_equal(Audio.load(path.read_bytes()).waveform, audio.waveform)


def test_audio_stereo_mixdown_from_file_and_array(tmp_path):
    left, right = sine(300, 8000), sine(700, 8000)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    from_file = Audio.load(tmp_path / "s.wav")
    assert from_file.waveform.ndim == 1
    np.testing.assert_allclose(from_file.waveform, (left + right) / 2, atol=1e-6)
    channels_first = Audio.load(np.stack([left, right]), sample_rate=8000)
    channels_last = Audio.load(np.stack([left, right], axis=1), sample_rate=8000)
    np.testing.assert_allclose(channels_first.waveform, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(channels_last.waveform, channels_first.waveform)


def test_audio_int16_array_is_scaled():
    audio = Audio.load(np.array([0, 16384, -32768], np.int16), sample_rate=10)
    np.testing.assert_allclose(audio.waveform, [0.0, 0.5, -1.0])
    assert audio.waveform.dtype == np.float32


@pytest.mark.parametrize("src_rate, dst_rate", [(44100, 16000), (16000, 48000), (22050, 16000)])
def test_resample_length_and_frequency(src_rate, dst_rate):
    audio = Audio(sine(440, src_rate), src_rate)
    out = audio.resample(dst_rate)
    assert out.sample_rate == dst_rate
    assert abs(out.num_samples - dst_rate) <= 1
    assert out.waveform.dtype == np.float32
    assert peak_hz(out) == pytest.approx(440, abs=1.5)
    assert out.duration == pytest.approx(audio.duration, abs=1e-3)


def test_resample_same_rate_is_noop():
    audio = Audio(sine(100, 8000), 8000)
    assert audio.resample(8000) is audio


def test_load_sample_audio_files():
    bird = Audio.load(ASSETS / "bird_audio.wav")  # 44.1 kHz stereo PCM16
    assert (bird.sample_rate, bird.num_samples) == (44100, 220500)
    assert bird.waveform.ndim == 1 and bird.waveform.dtype == np.float32
    assert 0 < np.abs(bird.waveform).max() <= 1
    speech = Audio.load(str(ASSETS / "test.wav"))  # 16 kHz mono float
    assert speech.sample_rate == 16000
    assert speech.duration == pytest.approx(9.0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Audio(np.zeros(0, np.float32), 16000), r"Audio.waveform is empty"),
        (lambda: Audio(np.zeros((2, 3, 4), np.float32), 16000), r"shape \(2, 3, 4\); expected a 1-D"),
        (lambda: Audio(np.array([0.0, np.nan], np.float32), 16000), r"NaN or infinite"),
        (lambda: Audio(np.zeros(4, np.float32), 0), r"Audio.sample_rate must be a positive integer"),
        (lambda: Audio(np.zeros(4, np.float32), 44.5), r"positive integer"),
        (lambda: Audio.load(np.zeros(4, np.float32), name="clip"), r"<array> \(clip\).*needs sample_rate"),
        (
            lambda: Audio.load(np.zeros(0, np.float32), sample_rate=8000, name="clip"),
            r"<array> \(clip\) is empty",
        ),
        (lambda: Audio.load(b"", name="upload"), r"<bytes> \(upload\) is empty"),
        (lambda: Audio.load(b"RIFF garbage" * 5, name="upload"), r"<bytes> \(upload\) could not be decoded"),
        (
            lambda: Audio(np.zeros(4, np.float32), 8000).resample(-1),
            r"sample_rate must be a positive integer",
        ),
    ],
)
def test_audio_errors(make, match):
    with pytest.raises(MediaError, match=match):
        make()


def test_audio_file_errors(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.wav.*not found; expected an existing audio file"):
        Audio.load(tmp_path / "nope.wav")
    corrupt = tmp_path / "bad.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(MediaError, match=r"bad\.wav.*could not be decoded"):
        Audio.load(corrupt)
    with pytest.raises(MediaError, match=r"test\.mp4.*no audio stream"):
        Audio.load(ASSETS / "test.mp4")
    with pytest.raises(MediaError, match=r"expected a file ending in one of"):
        Audio(np.zeros(4, np.float32), 8000).save(tmp_path / "a.mp3")


# ----------------------------------------------------------------------------- video


def test_video_mp4_round_trip(tmp_path):
    frames = gradient_frames(9, 32, 48)
    path = Video(frames, fps=8).save(tmp_path / "v.mp4")
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    back = Video.load(path)
    assert back.frames.shape == (9, 32, 48, 3) and back.frames.dtype == np.uint8
    assert back.fps == pytest.approx(8)
    assert np.abs(back.frames.astype(int) - frames).mean() < 6
    assert Video.load(path.read_bytes()).frames.shape == (9, 32, 48, 3)


def test_video_mp4_odd_size_is_padded_to_even(tmp_path):
    frames = gradient_frames(8, 31, 45)
    back = Video.load(Video(frames, fps=10).save(tmp_path / "odd.mp4"))
    assert back.frames.shape == (8, 32, 46, 3)
    assert np.abs(back.frames[:, :31, :45].astype(int) - frames).mean() < 6


def test_video_gif_round_trip(tmp_path):
    frames = gradient_frames(5, 16, 20)
    path = Video(frames, fps=10).save(tmp_path / "v.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        assert gif.info["duration"] == 100
    back = Video.load(path)
    assert back.frames.shape == (5, 16, 20, 3)
    assert np.abs(back.frames.astype(int) - frames).mean() < 8


def test_video_sampling_and_num_frames():
    frames = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    video = Video(frames, fps=5)
    assert (video.num_frames, video.duration) == (10, 2.0)
    assert video.sample_frames(4)[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert video.sample_frames(1)[:, 0, 0, 0].tolist() == [0]
    assert video.sample_frames(12).shape == (12, 2, 2, 3)
    fewer = Video.load(frames, fps=5, num_frames=4)
    assert fewer.frames[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert fewer.duration == pytest.approx(2.0)


def test_video_float_frames_are_converted():
    video = Video(np.full((2, 3, 4, 3), 1.0, np.float32), fps=1)
    assert video.frames.dtype == np.uint8 and int(video.frames.max()) == 255


def test_load_sample_video():
    video = Video.load(ASSETS / "test.mp4")
    assert video.frames.shape == (24, 320, 576, 3)
    assert video.fps == pytest.approx(8)
    assert video.duration == pytest.approx(3.0)
    sampled = Video.load(ASSETS / "test.mp4", num_frames=8)
    assert sampled.frames.shape == (8, 320, 576, 3)
    np.testing.assert_array_equal(sampled.frames[0], video.frames[0])
    np.testing.assert_array_equal(sampled.frames[-1], video.frames[-1])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Video(np.zeros((0, 4, 4, 3), np.uint8), 8), r"Video.frames is empty"),
        (
            lambda: Video(np.zeros((4, 4, 3), np.uint8), 8),
            r"shape \(4, 4, 3\); expected RGB frames \[T, H, W, 3\]",
        ),
        (lambda: Video(np.zeros((1, 4, 4, 3), np.int32), 8), r"dtype int32; expected uint8"),
        (lambda: Video(np.full((1, 2, 2, 3), 3.0), 8), r"outside \[0, 1\]"),
        (lambda: Video(np.zeros((1, 2, 2, 3), np.uint8), 0), r"Video.fps must be a positive"),
        (lambda: Video.load(np.zeros((1, 2, 2, 3), np.uint8), name="clip"), r"<array> \(clip\).*needs fps"),
        (
            lambda: Video.load(np.zeros((1, 2, 2, 4), np.uint8), fps=1, name="clip"),
            r"<array> \(clip\) has shape",
        ),
        (lambda: Video.load(b"", name="upload"), r"<bytes> \(upload\) is empty"),
        (
            lambda: Video.load(b"\x00\x01garbage" * 20, name="upload"),
            r"<bytes> \(upload\) could not be decoded",
        ),
        (lambda: Video(np.zeros((1, 2, 2, 3), np.uint8), 1).sample_frames(0), r"positive integer"),
    ],
)
def test_video_errors(make, match):
    with pytest.raises(MediaError, match=match):
        make()


def test_video_file_errors(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.mp4.*not found; expected an existing video file"):
        Video.load(tmp_path / "nope.mp4")
    corrupt = tmp_path / "bad.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 64)
    with pytest.raises(MediaError, match=r"bad\.mp4.*could not be decoded"):
        Video.load(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("plain text, which FFmpeg would happily render as a video\n" * 40)
    with pytest.raises(MediaError, match=r"notes\.txt.*text file"):
        Video.load(text)
    with pytest.raises(MediaError, match=r"bird_audio\.wav.*no video stream"):
        Video.load(ASSETS / "bird_audio.wav")
    with pytest.raises(MediaError, match=r"expected a file ending in one of"):
        Video(np.zeros((1, 2, 2, 3), np.uint8), 1).save(tmp_path / "v.avi")


# ----------------------------------------------------------------------------- dispatch


def test_load_media_dispatch():
    assert isinstance(load_media("image", ASSETS / "bird_image.jpg"), Image.Image)
    assert isinstance(load_media("audio", ASSETS / "test.wav"), Audio)
    assert load_media("video", ASSETS / "test.mp4", num_frames=2).num_frames == 2
    audio = load_media("audio", np.zeros(8, np.float32), sample_rate=8000)
    assert audio.sample_rate == 8000
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, format="PNG")
    assert load_media("image", buffer.getvalue()).size == (3, 2)


def test_load_media_unknown_modality():
    with pytest.raises(MediaError, match=r"unknown media modality 'text'; expected one of"):
        load_media("text", "x")
