"""Draw docs/mini.png: what the shipped `mini` pipeline makes for three prompts (no output_modalities given).

    python docs/make_mini_figure.py [--pipeline mini] [--out docs/mini.png] [--seed 0]

One row per prompt: the prompt and the answer's text, then the image (upscaled), the video's frames as a strip,
or the audio as a log-magnitude spectrogram (0-2 kHz, time left to right).
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

PROMPTS = (
    "draw a red circle on the left",
    "show a video of a green triangle moving up",
    "play a high beeping tone",
)
SCALE = 4
ROW = 32 * SCALE + 36


def spectrogram(wave: np.ndarray, rate: int, height: int, width: int) -> Image.Image:
    """A log-magnitude STFT picture of 0..2 kHz (bright = loud), ``width`` x ``height`` pixels."""
    n_fft, hop = 1024, 128
    frames = [wave[i : i + n_fft] * np.hanning(n_fft) for i in range(0, max(1, len(wave) - n_fft), hop)]
    mag = np.abs(np.fft.rfft(np.stack(frames), axis=1))
    top = int(2000 * n_fft / rate)
    db = 20 * np.log10(mag[:, :top] + 1e-6)
    db = np.clip((db - (db.max() - 60)) / 60, 0, 1)
    pixels = (db.T[::-1] * 255).astype(np.uint8)
    heat = np.stack([pixels, (pixels * 0.6).astype(np.uint8), 255 - pixels], axis=-1)
    return Image.fromarray(heat).resize((width, height), Image.BILINEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="mini")
    parser.add_argument("--out", default="docs/mini.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from anygen import AnyToAnyPipeline

    pipe = AnyToAnyPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    width = 8 * (32 * SCALE + 4) + 8
    canvas = Image.new("RGB", (width, ROW * len(PROMPTS)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, prompt in enumerate(PROMPTS):
        out = pipe(prompt, seed=args.seed)
        y = row * ROW
        draw.text((4, y + 2), f"> {prompt}", fill=(0, 0, 0))
        draw.text((4, y + 16), out.text.strip(), fill=(40, 40, 160))
        y += 34
        if out.images:
            canvas.paste(out.images[0].resize((32 * SCALE, 32 * SCALE), Image.NEAREST), (4, y))
        elif out.videos:
            for t, frame in enumerate(out.videos[0].frames[:8]):
                tile = Image.fromarray(frame).resize((32 * SCALE, 32 * SCALE), Image.NEAREST)
                canvas.paste(tile, (4 + t * (32 * SCALE + 4), y))
        elif out.audios:
            audio = out.audios[0]
            canvas.paste(spectrogram(audio.waveform, audio.sample_rate, 32 * SCALE, width - 8), (4, y))
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
