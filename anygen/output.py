"""The result of one pipeline call."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from anygen.media import Audio, Video

# The names :meth:`AnyToAnyOutput.save` writes.
OUTPUT_NAME = re.compile(r"response\.txt|image_\d+\.png|video_\d+\.mp4|audio_\d+\.wav")


def saved_outputs(folder: str | Path) -> list[Path]:
    """The files in ``folder`` named as :meth:`AnyToAnyOutput.save` names its files (an earlier answer)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and OUTPUT_NAME.fullmatch(p.name))


@dataclass
class AnyToAnyOutput:
    """What the model said and the media it made, in the order its signal spans appeared."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)
    audios: list[Audio] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)

    def to_message(self) -> dict:
        """This answer as an assistant chat message: a text part, then one part per image, video and audio (PIL
        image, :class:`~anygen.media.Video`, :class:`~anygen.media.Audio`), so a conversation can go on with it."""
        from anygen.messages import output_message

        return output_message(self)

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``response.txt``, ``image_<i>.png``, ``video_<i>.mp4`` and ``audio_<i>.wav``; return the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / "response.txt"]
        written[0].write_text(self.text + "\n", encoding="utf-8")
        for i, image in enumerate(self.images):
            written.append(folder / f"image_{i}.png")
            image.save(written[-1])
        for i, video in enumerate(self.videos):
            written.append(folder / f"video_{i}.mp4")
            video.save(written[-1])
        for i, audio in enumerate(self.audios):
            written.append(folder / f"audio_{i}.wav")
            audio.save(written[-1])
        return written
