"""Silence exactly the library warnings that say nothing to an anygen user.

transformers (5.x) warns once per class when something imports ``CLIPImageProcessor`` or ``SiglipImageProcessor``
without torchvision: diffusers' pipelines import them at import time, so every CLI run printed both lines before
anything of anygen's. anygen never needs torchvision (it uses the ``*ImageProcessorPil`` classes itself), so the
fallback is the intended behaviour. Only those records are dropped: every other transformers warning still shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

_TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_FALLBACK not in record.getMessage()


def install() -> None:
    """Add the filter to the logger that emits the fallback warning (idempotent; stdlib only, no import of
    transformers)."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide diffusers' and transformers' tqdm bars (loading components and weights, writing shards) for a while.

    Both libraries only offer global switches, restored afterwards. transformers' public switch also flips
    huggingface_hub's bars (and cannot restore their per-group state), so its module flag is set directly.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_on = diffusers_logging.is_progress_bar_enabled()
    transformers_on = getattr(transformers_logging, "_tqdm_active", None)
    diffusers_logging.disable_progress_bar()
    if transformers_on is not None:
        transformers_logging._tqdm_active = False
    try:
        yield
    finally:
        if diffusers_on:
            diffusers_logging.enable_progress_bar()
        if transformers_on is not None:
            transformers_logging._tqdm_active = transformers_on
