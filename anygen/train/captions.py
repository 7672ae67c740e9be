"""Alignment targets: each output caption encoded by its generator's own text encoder, once, cached on disk.

The cache holds one ``.npy`` per caption under ``<cache>/<modality>-<fingerprint>/``; the fingerprint is taken
from the text encoder's weights, so another generator never reads this one's embeddings. When a data set names
NExT-GPT's own ``*.npy`` embeddings (and gives their ``embed_root``), those are read instead; their shape must
match the generator's conditioning (NExT-GPT's image/video files are SD-2/Zeroscope ``(77, 1024)``, audio
AudioLDM's ``(512,)``), else the error says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from anygen.train.data import DataError, Example, Target

_ENCODE_BATCH = 64
_MEMORY_LIMIT = 50_000  # embeddings kept in memory after the first read


def caption_key(caption: str) -> str:
    return hashlib.sha1(caption.encode("utf-8")).hexdigest()


def text_encoder_fingerprint(generator) -> str:
    """A short hash of the generator's text encoder: type, conditioning shape and a digest of every weight."""
    h = hashlib.sha1(f"{generator.type_name}{tuple(generator.condition_shape)}".encode())
    components = generator.pipeline.components
    # Every text encoder (SDXL has two) and anything else that shapes the encoding (AudioLDM2's projection model).
    encoders = [components[n] for n in sorted(components) if n.startswith(("text_encoder", "projection_model"))]
    with torch.no_grad():
        for name, p in ((n, p) for e in encoders if e is not None for n, p in e.state_dict().items()):
            flat = p.detach().flatten()
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            if flat.numel():
                h.update(np.float64(flat.double().sum().item()).tobytes())
                h.update(flat[:16].double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class CaptionTargets:
    """Caption embeddings ``[tokens, width]`` (float32, CPU) for the targets of the training examples."""

    def __init__(self, pipe, cache_dir: Path, *, recompute: bool = False) -> None:
        self.pipe = pipe
        self.cache_dir = Path(cache_dir)
        self.recompute = recompute
        self._folders: dict[str, Path] = {}
        self._memory: dict[tuple[str, str], torch.Tensor] = {}
        self.computed = 0  # captions encoded by prepare()

    def shape(self, modality: str) -> tuple[int, int]:
        return tuple(self.pipe.generator(modality).condition_shape)

    def folder(self, modality: str) -> Path:
        if modality not in self._folders:
            fp = text_encoder_fingerprint(self.pipe.generator(modality))
            self._folders[modality] = self.cache_dir / f"{modality}-{fp}"
        return self._folders[modality]

    def _file(self, modality: str, caption: str) -> Path:
        key = caption_key(caption)
        return self.folder(modality) / key[:2] / f"{key}.npy"

    # -- once, before training ----------------------------------------------------------------------
    def prepare(self, examples: Iterable[Example], progress: bool = False) -> dict[str, int]:
        """Check NExT-GPT embeddings' shapes and encode every caption not cached yet. Returns counts."""
        todo: dict[str, dict[str, None]] = {}
        npy_checked: set[str] = set()
        counts = {"npy": 0, "cached": 0, "encoded": 0}
        for ex in examples:
            for t in ex.targets:
                if t.embedding is not None:
                    counts["npy"] += 1
                    if t.modality not in npy_checked:  # one file per modality tells whether they fit
                        self.read_npy(t, ex.source)
                        npy_checked.add(t.modality)
                elif t.caption is not None and not self.recompute:
                    todo.setdefault(t.modality, {})[t.caption] = None
        for modality, captions in todo.items():
            missing = [c for c in captions if not self._file(modality, c).is_file()]
            counts["cached"] += len(captions) - len(missing)
            counts["encoded"] += len(missing)
            bar = None
            if progress and missing:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(missing), desc=f"{modality} caption embeddings", unit="caption")
            for start in range(0, len(missing), _ENCODE_BATCH):
                chunk = missing[start : start + _ENCODE_BATCH]
                embeds = self.encode(modality, chunk)
                for caption, e in zip(chunk, embeds, strict=True):
                    path = self._file(modality, caption)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp.npy")
                    np.save(tmp, e.numpy())
                    tmp.replace(path)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        self.computed = counts["encoded"]
        return counts

    # -- per batch ------------------------------------------------------------------------------------
    def encode(self, modality: str, captions: Sequence[str]) -> torch.Tensor:
        """The generator's text encoder, now: ``[n, tokens, width]`` float32 on the CPU.

        Captions longer than the encoder's window are cut, as the generator's pipeline cuts them (without the
        pipeline's warning each time).
        """
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            return self.pipe.generator(modality).encode_text(list(captions)).float().cpu()
        finally:
            diffusers_logging.set_verbosity(level)

    def read_npy(self, target: Target, source: str) -> torch.Tensor:
        array = _load_npy(target.embedding, f"{source}: cannot read caption embedding {target.embedding}")
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
        if tensor.dim() == 1:  # AudioLDM's CLAP vector (512,)
            tensor = tensor[None]
        want = self.shape(target.modality)
        if tuple(tensor.shape) != want:
            gen = self.pipe.spec.outputs[target.modality].generator.type
            raise DataError(
                f"{source}: caption embedding {target.embedding} has shape {tuple(array.shape)} but the "
                f"{target.modality} generator ({gen}) is conditioned on {want}; NExT-GPT's *.npy files fit only "
                "the generator that made them: leave out embed_root to encode the captions with this "
                "pipeline's own text encoder"
            )
        return tensor

    def batch(self, targets: Sequence[tuple[Target, str]]) -> torch.Tensor:
        """Embeddings ``[n, tokens, width]`` for targets of one modality (``(target, source)`` pairs)."""
        if self.recompute:
            fresh = [i for i, (t, _) in enumerate(targets) if t.embedding is None]
            encoded = (
                self.encode(targets[0][0].modality, [targets[i][0].caption for i in fresh]) if fresh else None
            )
            out = []
            for i, (t, source) in enumerate(targets):
                out.append(encoded[fresh.index(i)] if t.embedding is None else self.read_npy(t, source))
            return torch.stack(out)
        return torch.stack([self.get(t, source) for t, source in targets])

    def get(self, target: Target, source: str) -> torch.Tensor:
        if target.embedding is not None:
            key = (target.modality, str(target.embedding))
            loader = lambda: self.read_npy(target, source)  # noqa: E731
        else:
            key = (target.modality, target.caption)
            path = self._file(target.modality, target.caption)

            def loader() -> torch.Tensor:
                if not path.is_file():
                    raise DataError(
                        f"{source}: caption embedding cache {path} is missing (was prepare() run?)"
                    )
                what = f"{source}: cannot read caption embedding cache {path} (delete it to recompute)"
                return torch.from_numpy(_load_npy(path, what)).float()

        if key in self._memory:
            return self._memory[key]
        value = loader()
        if len(self._memory) < _MEMORY_LIMIT:
            self._memory[key] = value
        return value


def _load_npy(path: Path, what: str) -> np.ndarray:
    """A plain numeric ``.npy`` array; pickled objects are refused, never loaded (unpickling can run code)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(f"{what}: it holds pickled Python objects, which anygen never loads") from None
        raise DataError(f"{what}: {err}") from None
    except OSError as err:
        raise DataError(f"{what}: {err}") from None
