"""The hand-written baseline: the same component objects as an anygen pipeline, called directly.

What a user would write without anygen, NExT-GPT style, over the very objects ``pipe.llm``,
``pipe.encoder(name)``, ``pipe.input_projector(name)``, ``pipe.output_projector(m)`` and ``pipe.generator(m)``
hold (so both sides run the same weights):

1. the prompt: the template string written out by hand (``"### Human: {text}\\n### Assistant:"``),
   tokenized with the LLM's tokenizer after a BOS; media inputs are encoded by the encoder, projected by the
   input projector and spliced between the ``<Img>``/``</Img>`` marker embeddings (``inputs_embeds``);
2. the LLM: ``transformers`` ``model.generate`` with greedy decoding, ``min_new_tokens == max_new_tokens``
   (so the same number of text tokens as anygen's greedy answer), the signal tokens suppressed (a
   ``suppress_tokens`` logits processor), KV cache on;
3. the signal span (text-to-X only): one forward pass of the last generated token plus the modality's signal
   tokens over the cache ``generate`` returned, ``output_hidden_states=True``; the hidden states at the signal
   positions plus the signal tokens' input embeddings go through the output projector (NExT-GPT's
   ``TextFcLayer`` input);
4. the generator: the diffusers pipeline itself (``generator.pipeline``) with ``prompt_embeds`` and
   ``negative_prompt_embeds`` (the generator's text encoder on ``""``, computed once at set-up, as anygen
   caches it too), the same steps, guidance, sizes and ``torch.Generator`` seed, and the same ``output_type``
   (PIL images; numpy frames / waveforms).

anygen's own decoding loop runs one forward per token (the span tokens included) and checks stop strings as
it goes; the baseline leaves out what anygen adds around the models (tqdm bar, spec defaults, media objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class BaselineResult:
    token_ids: list[int]  # the new tokens: text, then the signal span when there is one
    media: Any = None  # what the diffusers pipeline returned for the one item (PIL image / array)


class HandWritten:
    """Direct calls on the components of ``pipe`` (an ``AnyToAnyPipeline``), built once at set-up."""

    def __init__(self, pipe, *, user_template: str = "### Human: {content}\n### Assistant:") -> None:
        lm = pipe.llm
        self.pipe = pipe
        self.model = lm.model  # the transformers causal LM
        self.tokenizer = lm.tokenizer
        self.hidden_layer = lm.hidden_layer
        self.device = self.model.get_input_embeddings().weight.device
        self.user_template = user_template
        # Signal-token ids, read from the tokenizer by name (as NExT-GPT does).
        self.spans = {
            m: self.tokenizer.convert_tokens_to_ids(out.signal_tokens.names())
            for m, out in pipe.spec.outputs.items()
        }
        self.signal_ids = sorted({t for ids in self.spans.values() for t in ids})
        self._negative: dict[str, torch.Tensor] = {}

    # ---- prompt ------------------------------------------------------------------------------------------
    def _ids(self, text: str) -> torch.Tensor:
        return (
            self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0].to(self.device)
        )

    def prompt_ids(self, text: str) -> torch.Tensor:
        """``[1, L]``: BOS + the filled-in template."""
        bos = torch.tensor([self.tokenizer.bos_token_id], device=self.device)
        return torch.cat([bos, self._ids(self.user_template.format(content=text))])[None]

    def prompt_embeds_with_media(self, text: str, media: list[tuple[str, Any]]) -> torch.Tensor:
        """``[1, L, hidden]``: BOS, ``### Human: ``, each input as ``<Img>`` + projected features + ``</Img>``,
        the text, ``\\n### Assistant:`` (anygen's untagged-inputs order)."""
        embed = self.model.get_input_embeddings()
        before, after = self.user_template.split("{content}")
        parts = [
            embed(torch.tensor([self.tokenizer.bos_token_id], device=self.device)),
            embed(self._ids(before)),
        ]
        for modality, item in media:
            encoder_name, proj_name = self._encoder_for(modality)
            features = self.pipe.encoder(encoder_name).encode(modality, [item])
            projector = self.pipe.input_projector(proj_name)
            projected = projector(features.to(self.device, next(projector.parameters()).dtype))[0]
            parts += [embed(self._ids("<Img>")), projected.to(embed.weight.dtype), embed(self._ids("</Img>"))]
        parts += [embed(self._ids(text)), embed(self._ids(after))]
        return torch.cat(parts)[None]

    def _encoder_for(self, modality: str) -> tuple[str, str]:
        spec = self.pipe.spec
        for proj_name, proj in spec.input_projectors.items():
            if modality in spec.encoders[proj.encoder].modalities:
                return proj.encoder, proj_name
        raise KeyError(modality)

    # ---- LLM -----------------------------------------------------------------------------------------------
    def _generate(self, n_tokens: int, **inputs: torch.Tensor):
        length = (inputs.get("input_ids") if "input_ids" in inputs else inputs["inputs_embeds"]).shape[1]
        return self.model.generate(
            **inputs,
            attention_mask=torch.ones(1, length, dtype=torch.long, device=self.device),
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            suppress_tokens=self.signal_ids,
            use_cache=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    @torch.no_grad()
    def text_only(self, text: str, media: list[tuple[str, Any]], n_tokens: int) -> BaselineResult:
        """Media in, text out: encoders, input projector, ``generate`` on ``inputs_embeds``."""
        embeds = self.prompt_embeds_with_media(text, media)
        out = self._generate(n_tokens, inputs_embeds=embeds)
        return BaselineResult(token_ids=out.sequences[0, -n_tokens:].tolist())

    @torch.no_grad()
    def signal_states(self, text: str, modality: str, n_text_tokens: int):
        """``generate`` ``n_text_tokens``, then one cached forward over the last token + the signal span.

        Returns (new token ids, hidden states ``[1, n_signal, H]``, signal input embeddings ``[1, n_signal, H]``).
        """
        ids = self.prompt_ids(text)
        out = self._generate(n_text_tokens, input_ids=ids)
        seq = out.sequences  # [1, L + n]; the cache holds all but the last token
        span = torch.tensor([self.spans[modality]], device=self.device)
        feed = torch.cat([seq[:, -1:], span], dim=1)
        cache_kw = "cache" if "cache" in type(out).__dataclass_fields__ else "past_key_values"
        fwd = self.model(
            input_ids=feed,
            attention_mask=torch.ones(1, seq.shape[1] + span.shape[1], dtype=torch.long, device=self.device),
            output_hidden_states=True,
            use_cache=True,
            **{cache_kw: getattr(out, cache_kw)},
        )
        hidden = fwd.hidden_states[self.hidden_layer][:, 1:]
        embeds = self.model.get_input_embeddings()(span)
        token_ids = seq[0, ids.shape[1] :].tolist() + span[0].tolist()
        return token_ids, hidden, embeds

    # ---- generators ------------------------------------------------------------------------------------------
    def negative_embeds(self, modality: str) -> torch.Tensor:
        """The unconditional input: the generator's own text encoder on ``""`` (computed once)."""
        if modality not in self._negative:
            pipeline = self.pipe.generator(modality).pipeline
            device = self.device
            with torch.no_grad():
                if modality == "audio":
                    self._negative[modality] = pipeline._encode_prompt([""], device, 1, False)
                else:
                    self._negative[modality] = pipeline.encode_prompt([""], device, 1, False)[0]
        return self._negative[modality]

    @torch.no_grad()
    def text_to(
        self,
        modality: str,
        text: str,
        *,
        n_text_tokens: int,
        seed: int,
        steps: int,
        guidance_scale: float,
        **sizes: Any,
    ) -> BaselineResult:
        """Text in, one ``modality`` item out."""
        token_ids, hidden, embeds = self.signal_states(text, modality, n_text_tokens)
        projector = self.pipe.output_projector(modality)
        conditioning = projector(hidden, embeds)
        pipeline = self.pipe.generator(modality).pipeline
        negative = self.negative_embeds(modality) if guidance_scale > 1 else None
        common = dict(
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        )
        if modality == "image":
            out = pipeline(
                prompt_embeds=conditioning,
                negative_prompt_embeds=negative,
                output_type="pil",
                **common,
                **sizes,
            )
            media = out.images[0]
        elif modality == "video":
            out = pipeline(
                prompt_embeds=conditioning,
                negative_prompt_embeds=negative,
                output_type="np",
                **common,
                **sizes,
            )
            media = out.frames[0]
        else:
            out = pipeline(
                prompt_embeds=conditioning[:, 0],
                negative_prompt_embeds=None if negative is None else negative,
                output_type="np",
                **common,
                **sizes,
            )
            media = out.audios[0]
        return BaselineResult(token_ids=token_ids, media=media)
