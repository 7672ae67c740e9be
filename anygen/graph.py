"""A readable description of a pipeline's graph (``anygen info``)."""

from __future__ import annotations

import torch

from anygen import widths
from anygen.builders import build_input_projector, build_output_projector
from anygen.errors import WeightsError
from anygen.spec import PipelineSpec, load_spec


def _llm_from_config(spec: PipelineSpec) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(spec.llm.config or {})
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type", "llama"), **config))


def _source(node) -> str:
    return f"weights {node.path}" if getattr(node, "path", None) else f"random init, seed {node.seed}"


def _count(module) -> str:
    if module is None:
        return "not built"
    inner = getattr(module, "pipeline", None)  # a generator wraps a diffusers pipeline
    modules = inner.components.values() if inner is not None else [module]
    total = sum(p.numel() for m in modules if hasattr(m, "parameters") for p in m.parameters())
    if total >= 1e9:
        return f"{total / 1e9:.2f}B params"
    return f"{total / 1e6:.2f}M params" if total >= 1e5 else f"{total:,} params"


def describe(name_or_path: str, parameters: bool = True) -> str:
    spec = load_spec(name_or_path)
    pipe = None
    if parameters:
        from anygen.pipeline import AnyToAnyPipeline

        pipe = AnyToAnyPipeline(spec)

    def count(build, on_meta=None) -> str:
        """Parameters of the built node; when its weights are missing, of the same node on the meta device."""
        if pipe is None:
            return ""
        try:
            return "  [" + _count(build()) + "]"
        except WeightsError:
            if on_meta is None:
                return "  [weights missing]"
            with torch.device("meta"):
                return "  [" + _count(on_meta()) + ", weights missing]"

    hidden = widths.llm_hidden_size(spec)
    lines = [f"pipeline {spec.name}: {spec.description}".rstrip(": "), ""]
    lines.append("inputs")
    for name, proj in spec.input_projectors.items():
        enc = spec.encoders[proj.encoder]
        dim = widths.encoder_output_text(spec, proj.encoder)  # "32", or "16 x 32 per image, ..." (tokens)
        lines.append(
            f"  encoders.{proj.encoder} ({enc.type}, {_source(enc)}): {', '.join(enc.modalities)} -> {dim}"
            + count(lambda n=proj.encoder: pipe.encoder(n))
        )
        lines.append(
            f"  input_projectors.{name} ({proj.type}): {dim} -> {proj.num_tokens} x {hidden}"
            + count(
                lambda n=name: pipe.input_projector(n),
                lambda n=name: build_input_projector(spec, n, load=False),
            )
        )
    lines.append("llm")
    lines.append(
        f"  llm ({spec.llm.type}, {_source(spec.llm)}): hidden {hidden}, layer {spec.llm.hidden_layer} feeds the "
        "output projectors" + count(lambda: pipe.llm, lambda: _llm_from_config(spec))
    )
    lines.append("outputs")
    for modality, out in spec.outputs.items():
        layout = widths.generator_layout(spec, modality)
        tokens, width = layout.shape
        made = layout.describe() if layout.packed else f"{tokens} x {width}"  # several tensors: each by name
        names = out.signal_tokens.names()
        lines.append(f"  {modality}: signal tokens {names[0]}..{names[-1]} ({out.signal_tokens.count})")
        lines.append(
            f"    projector ({out.projector.type}): {out.signal_tokens.count} x {hidden} -> {made}"
            + count(
                lambda m=modality: pipe.output_projector(m),
                lambda m=modality: build_output_projector(spec, m, load=False),
            )
        )
        lines.append(
            f"    generator ({out.generator.type}, {_source(out.generator)}): conditioned on {made}"
            + count(lambda m=modality: pipe.generator(m))
        )
    return "\n".join(lines)
