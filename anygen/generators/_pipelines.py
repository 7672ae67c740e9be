"""The one place that imports diffusers' pipeline classes, and the diffusers quirks around them.

diffusers 0.42 moved ``AudioLDMPipeline`` and ``TextToVideoSDPipeline`` to ``diffusers.pipelines.deprecated``.
They still import from ``diffusers`` and run, but log "The <Pipeline> has been deprecated ..." each time one is
constructed (``DeprecatedPipelineMixin.__init__``). That notice, for those two pipelines only, is dropped here.
So is ``ModelMixin.to(dtype)``'s "There are modules in X that should be kept in float32: []" when the list is
empty (nothing to keep, nothing to warn about). Every other diffusers message is left alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

_DEPRECATED_PIPELINES = ("AudioLDMPipeline", "TextToVideoSDPipeline")
_NOTICES = tuple(f"The {name} has been deprecated" for name in _DEPRECATED_PIPELINES)


_EMPTY_FP32_NOTICE = re.compile(r"There are modules in \w+ that should be kept in float32: \[\]\. ")


class _DropNotice(logging.Filter):
    def __init__(self, matches: Callable[[str], bool]):
        super().__init__()
        self._matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not self._matches(message)


# diffusers' loggers are named after its modules.
_FILTERS = {
    "diffusers.pipelines.pipeline_utils": _DropNotice(lambda m: m.startswith(_NOTICES)),
    "diffusers.models.modeling_utils": _DropNotice(lambda m: _EMPTY_FP32_NOTICE.match(m) is not None),
}


def _install_filter() -> None:
    for name, notice_filter in _FILTERS.items():
        logger = logging.getLogger(name)
        if notice_filter not in logger.filters:
            logger.addFilter(notice_filter)


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword for a dtype: ``dtype`` since diffusers 0.42 (``torch_dtype`` is deprecated)."""
    if dtype is None:
        return {}
    import diffusers
    from packaging.version import Version

    key = "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"
    return {key: dtype}


def pipeline_class(type_name: str):
    """The diffusers pipeline class for a generator type."""
    _install_filter()
    if type_name == "stable-diffusion":
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline
    if type_name == "zeroscope":
        from diffusers import TextToVideoSDPipeline

        return TextToVideoSDPipeline
    if type_name == "audioldm":
        from diffusers import AudioLDMPipeline

        return AudioLDMPipeline
    from anygen.generators.shapes import MODERN_PIPELINES

    if type_name in MODERN_PIPELINES:
        import diffusers

        return getattr(diffusers, MODERN_PIPELINES[type_name])
    raise KeyError(type_name)
