"""The language model node: a transformers causal LM, its tokenizer and the signal tokens.

Signal tokens (``[IMG0]..[IMG3]`` and so on) are added as special tokens; the embedding matrix grows to
hold them. Prompts are sequences of text and media features, embedded into ``inputs_embeds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from anygen.checkpoints import load_error_reason
from anygen.errors import WeightsError


@dataclass(frozen=True)
class SignalSpan:
    """The signal tokens of one output modality, in order."""

    modality: str
    token_ids: tuple[int, ...]


class LanguageModel(nn.Module):
    """A causal LM plus tokenizer, with the signal tokens of every output modality registered."""

    def __init__(
        self, model: nn.Module, tokenizer, signal_tokens: dict[str, list[str]], hidden_layer: int = -1
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_layer = hidden_layer
        #: Whether prompts start with the tokenizer's BOS (a chat template writes its own, anygen.chat_template).
        self.add_bos = True
        #: A chat template's end-of-turn token(s), where decoding also stops.
        self.end_of_turn_ids: tuple[int, ...] = ()
        missing = [t for names in signal_tokens.values() for t in names if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            # (transformers re-ties a tied LM head to the resized rows: tests/test_llm_families.py checks)
            with torch.random.fork_rng(devices=[]):  # new rows are random, but the same in every process
                torch.manual_seed(0)
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        self.spans = {
            m: SignalSpan(m, tuple(tokenizer.convert_tokens_to_ids(n) for n in names))
            for m, names in signal_tokens.items()
        }
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: dict,
        tokenizer,
        signal_tokens: dict[str, list[str]],
        seed: int = 0,
        hidden_layer: int = -1,
    ) -> LanguageModel:
        """Random weights from a transformers config dict (``model_type`` names the architecture)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        config = dict(config)
        model_type = config.pop("model_type", "llama")
        tokenizer.add_tokens([t for names in signal_tokens.values() for t in names], special_tokens=True)
        config.setdefault("vocab_size", len(tokenizer))
        config.setdefault("bos_token_id", tokenizer.bos_token_id)
        config.setdefault("eos_token_id", tokenizer.eos_token_id)
        config.setdefault("pad_token_id", tokenizer.pad_token_id)
        hf_config = AutoConfig.for_model(model_type, **config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(hf_config)
        return cls(model.eval(), tokenizer, signal_tokens, hidden_layer)

    @classmethod
    def from_pretrained(
        cls, path: Path, signal_tokens: dict[str, list[str]], hidden_layer: int = -1, torch_dtype=None
    ) -> LanguageModel:
        """Load a local Hugging Face folder (config.json, safetensors, tokenizer files)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from anygen._quiet import quiet_progress

        if not (path / "config.json").is_file():
            raise WeightsError(f"llm: {path} holds no config.json (expected a Hugging Face model folder)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, padding_side="left")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise WeightsError(
                f"llm: the tokenizer in {path} could not be loaded: {load_error_reason(err)}"
            ) from None
        try:  # safetensors only: a pytorch_model.bin (a pickle) is never read
            with quiet_progress():  # transformers' "Loading weights" bar: anygen reports its own progress
                model = AutoModelForCausalLM.from_pretrained(
                    # float32 unless asked: transformers would keep a float16 copy's dtype
                    path, local_files_only=True, dtype=torch_dtype or torch.float32, use_safetensors=True
                )
        except Exception as err:  # OSError (no safetensors), SafetensorError, ValueError, ...
            raise WeightsError(
                f"llm: {path} could not be loaded (model.safetensors expected): {load_error_reason(err)}"
            ) from None
        return cls(model.eval(), tokenizer, signal_tokens, hidden_layer)

    def load_adapter(self, path: Path) -> None:
        """Apply a peft (LoRA) adapter folder over the model (``adapter_config.json`` + safetensors)."""
        self.model = peft_adapter(self.model, path, "llm.adapter").eval()

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.embeddings.weight.shape[1]

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def signal_token_ids(self) -> set[int]:
        return {t for span in self.spans.values() for t in span.token_ids}

    # -- prompts ------------------------------------------------------------------------------------
    def embed_text(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
        return self.embeddings(ids.to(self.device))

    def embed_segments(self, segments: Sequence[str | torch.Tensor], bos: bool = True) -> torch.Tensor:
        """Embed text pieces and already-projected media features ``[n, hidden]`` into one ``[L, hidden]``.

        One BOS starts the sequence (NExT-GPT's legacy code put one before every text piece), unless the
        prompt template writes its own (``add_bos`` is False).
        """
        parts = []
        if bos and self.add_bos and self.tokenizer.bos_token_id is not None:
            parts.append(self.embeddings(torch.tensor([self.tokenizer.bos_token_id], device=self.device)))
        for seg in segments:
            if isinstance(seg, str):
                if seg:
                    parts.append(self.embed_text(seg))
            else:
                parts.append(seg.to(device=self.device, dtype=self.dtype))
        return torch.cat(parts, dim=0)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated tokens, without signal or other special tokens."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def stop_token_ids(self) -> set[int]:
        """Tokens that end an answer: the tokenizer's EOS, the generation config's EOS (one id or a list, as
        Llama 3 and Gemma give) and the chat template's end-of-turn token."""
        given = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        given = list(given) if isinstance(given, (list, tuple)) else [given]
        ids = [self.tokenizer.eos_token_id, *given, *self.end_of_turn_ids]
        return {t for t in ids if isinstance(t, int) and not isinstance(t, bool)}


def tied_embeddings(model: nn.Module) -> bool:
    """Whether the LM head is the input embedding matrix itself (Gemma, small Qwen2.5 and others tie them)."""
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def peft_adapter(model: nn.Module, path: str | Path, where: str) -> nn.Module:
    """``model`` with the peft (LoRA) adapter folder ``path`` over it (a ``PeftModel``, not trainable), read
    from ``adapter_model.safetensors`` only: peft's ``adapter_model.bin`` is a pickle and is never read.
    :class:`WeightsError` (its message starting with ``where``) for a missing or malformed folder; a missing
    or unreadable weights file is refused before ``model`` is touched."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise WeightsError(f"{where}: {path} holds no adapter_config.json (expected a peft adapter folder)")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():  # never peft's adapter_model.bin (a pickle)
        raise WeightsError(f"{where}: {path} holds no adapter_model.safetensors")
    try:  # its header read first: peft changes the model in place before it reads the weights
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as file:
            file.keys()
    except Exception as err:
        raise WeightsError(
            f"{where}: {weights} is not a safetensors file: {load_error_reason(err)}"
        ) from None
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as err:  # a malformed config or weights file
        raise WeightsError(f"{where}: {path} could not be loaded: {load_error_reason(err)}") from None
