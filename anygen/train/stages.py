"""What each stage trains, and the module whose forward computes its losses.

* Stage ``lm`` (language pre-training, before the three stages when the LLM starts from random weights): the whole
  LLM, and the input projectors of media inputs the data has; LM loss on the assistant turns.
* Stage 1 (encoding-side alignment): the input projectors of the data's input modalities. LLM and encoders frozen;
  LM loss on the caption tokens only.
* Stage 2 (decoding-side alignment): the output projectors of the data's output modalities, plus (as NExT-GPT)
  the signal tokens' rows of the LLM's input embeddings and LM head. Loss: LM loss on the answer (caption +
  signal span) + alignment loss (+ optional diffusion loss).
* Stage 3 (instruction tuning): LoRA on the LLM, the input and output projectors, the signal-token rows. Loss:
  LM loss on the assistant turns + alignment loss wherever an answer produces media.

Everything else is frozen (``requires_grad=False``) and kept out of the optimizer.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from anygen.train.config import STAGE_NAMES, ConfigError, TrainConfig
from anygen.train.data import MODALITIES
from anygen.train.losses import alignment_loss, lm_loss_per_example
from anygen.train.sequences import Batch, FeatureCache


class SignalTokenRows(nn.Module):
    """Trainable copies of the signal tokens' rows of the LLM's input embeddings and LM head.

    Forward hooks put them in place of the frozen rows, so the rest of the (possibly huge) matrices stays out of
    the optimizer; :meth:`merge` writes them back into the weights when training ends. When the LM head is tied
    to the input embeddings (Gemma, small Qwen2.5, ...) one set of rows serves both, and is merged once.
    """

    def __init__(self, lm) -> None:
        super().__init__()
        ids = sorted(lm.signal_token_ids())
        emb = lm.embeddings
        head = lm.model.get_output_embeddings()
        self.register_buffer(
            "ids", torch.tensor(ids, dtype=torch.long, device=emb.weight.device), persistent=False
        )
        lookup = torch.full((emb.num_embeddings,), -1, dtype=torch.long, device=emb.weight.device)
        lookup[self.ids] = torch.arange(len(ids), device=emb.weight.device)
        self.register_buffer("lookup", lookup, persistent=False)
        self.input_rows = nn.Parameter(emb.weight.detach()[self.ids].float().clone())
        self.tied = head is None or head.weight is emb.weight
        self.output_rows = None if self.tied else nn.Parameter(head.weight.detach()[self.ids].float().clone())
        # A tuple: the LLM's layers, not submodules of this one (their weights are not counted here).
        self._layers = (emb, head)
        self._handles = [emb.register_forward_hook(self._embed_hook)]
        if head is not None:
            self._handles.append(head.register_forward_hook(self._head_hook))

    def _embed_hook(self, module, args, output):
        idx = self.lookup[args[0]]
        rows = self.input_rows.to(output.dtype)[idx.clamp(min=0)]
        scale = getattr(module, "embed_scale", None)  # Gemma's embeddings scale their rows by sqrt(hidden)
        if isinstance(scale, torch.Tensor):
            rows = rows * scale.to(output.dtype)
        return torch.where((idx >= 0)[..., None], rows, output)

    def _head_hook(self, module, args, output):
        hidden = args[0]
        rows = (self.input_rows if self.output_rows is None else self.output_rows).to(hidden.dtype)
        logits = hidden @ rows.T
        if getattr(module, "bias", None) is not None:
            logits = logits + module.bias[self.ids]
        return output.index_copy(-1, self.ids, logits.to(output.dtype))

    @torch.no_grad()
    def merge(self) -> None:
        """Write the trained rows into the LLM's weights and remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []
        emb, head = self._layers
        emb.weight[self.ids] = self.input_rows.to(emb.weight.dtype)  # the LM head too, when tied
        if self.output_rows is not None:
            head.weight[self.ids] = self.output_rows.to(head.weight.dtype)


@dataclass
class StageOutput:
    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # lm_loss, align_loss, ... (detached)


class StageModel(nn.Module):
    """The trained parts of a pipeline for one stage; ``forward(batch)`` returns the losses.

    The pipeline's frozen encoders and generators are used but not held as submodules (they stay out of
    DistributedDataParallel).
    """

    def __init__(self, pipe, config: TrainConfig, input_modalities: list[str], output_modalities: list[str]):
        super().__init__()
        self.stage = config.stage
        self.config = config
        self.input_modalities = list(input_modalities)
        self.output_modalities = list(output_modalities)
        self._pipe = [pipe]  # a list: not a submodule
        self.llm = pipe.llm
        self.llm.requires_grad_(self.stage == "lm")
        self.llm.model.train(self.stage == "lm")
        self.input_projectors = nn.ModuleDict()
        self._projector_of: dict[str, str] = {}
        for m in self.input_modalities:
            enc, proj = pipe._encoder_for(m)
            self._projector_of[m] = proj
            if proj not in self.input_projectors:
                self.input_projectors[proj] = pipe.input_projector(proj)
            pipe.encoder(enc).requires_grad_(False).eval()
        self.output_projectors = nn.ModuleDict({m: pipe.output_projector(m) for m in self.output_modalities})
        for m in self.output_modalities:
            gen = pipe.generator(m)
            for module in gen.pipeline.components.values():
                if isinstance(module, nn.Module):
                    module.requires_grad_(False).eval()
        self.input_projectors.requires_grad_(self.stage in (1, 3, "lm")).train(self.stage in (1, 3, "lm"))
        self.output_projectors.requires_grad_(self.stage in (2, 3)).train(self.stage in (2, 3))
        self.feature_cache = FeatureCache(config.feature_cache)
        self.latent_cache = FeatureCache(config.latent_cache)
        self.lora = False
        if self.stage == 3:
            self._add_lora(config)
        self.signal = (
            SignalTokenRows(self.llm)
            if self.stage in (2, 3) and config.train_signal_tokens and self.output_modalities
            else None
        )
        self.diffusion = {}
        if self.stage in (2, 3) and config.diffusion_weight > 0:
            from anygen.train.diffusion import DiffusionLoss

            packed = [m for m in self.output_modalities if pipe.generator(m).layout.packed]
            if packed:
                raise ConfigError(
                    f"diffusion_weight: the diffusion loss runs the UNet of a one-tensor generator; the {packed[0]} "
                    f"generator ({pipe.spec.outputs[packed[0]].generator.type}) is conditioned on several tensors: "
                    "train it with the alignment loss only (diffusion_weight: 0)"
                )
            self.diffusion = {
                m: DiffusionLoss(pipe.generator(m), config.snr_gamma, self.latent_cache)
                for m in self.output_modalities
            }

    @property
    def pipe(self):
        return self._pipe[0]

    def _add_lora(self, config: TrainConfig) -> None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:  # pragma: no cover - peft is a core dependency of training
            from anygen.errors import AnyGenError

            raise AnyGenError("stage 3 needs peft (pip install 'anygen[train]')") from None
        names = {n.rsplit(".", 1)[-1] for n, _ in self.llm.model.named_modules()}
        missing = [t for t in config.lora.target_modules if t not in names]
        if missing:
            from anygen.train.config import ConfigError

            raise ConfigError(
                f"train config: lora.target_modules: the LLM has no module named {missing} "
                f"(its linear layers include {sorted(n for n in names if n.endswith('proj'))})"
            )
        lora = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with _quiet_peft():
            self.llm.model = get_peft_model(self.llm.model, lora)
        self.llm.model.train()
        self.lora = True

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.trainable_parameters()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.trainable_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            from anygen.train.config import ConfigError

            raise ConfigError(
                f"the checkpoint does not fit this run's trainable parameters (missing {missing[:4]}, "
                f"unexpected {unexpected[:4]}): resume with the stage, pipeline and data it was made with"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name])

    def summary(self) -> str:
        """What this stage trains, with parameter counts."""
        pipe = self.pipe
        rows: list[tuple[str, int, int]] = []

        def count(module: nn.Module) -> tuple[int, int]:
            ps = list(module.parameters())
            return sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps)

        rows.append(("llm" + (" (LoRA)" if self.lora else ""), *count(self.llm)))
        if self.signal is not None:
            n = sum(p.numel() for p in self.signal.parameters())
            rows.append((f"llm signal-token rows ({len(self.signal.ids)} tokens)", n, n))
        for name, module in self.input_projectors.items():
            rows.append((f"input_projectors.{name}", *count(module)))
        for name, module in self.output_projectors.items():
            rows.append((f"outputs.{name}.projector", *count(module)))
        encoders = {pipe._encoder_for(m)[0] for m in self.input_modalities}
        for name in sorted(encoders):
            rows.append((f"encoders.{name}", *count(pipe.encoder(name))))
        for m in self.output_modalities:
            gen = pipe.generator(m)
            total = sum(
                p.numel()
                for module in gen.pipeline.components.values()
                if isinstance(module, nn.Module)
                for p in module.parameters()
            )
            rows.append((f"outputs.{m}.generator", 0, total))
        trainable = sum(r[1] for r in rows)
        total = sum(r[2] for r in rows)
        width = max(len(r[0]) for r in rows)
        lines = [f"stage {self.stage}: {STAGE_NAMES[self.stage]}"]
        for name, t, n in rows:
            state = "frozen" if t == 0 else ("trained" if t == n else "partly trained")
            lines.append(f"  {name:<{width}}  {t:>14,} / {n:>14,}  {state}")
        lines.append(
            f"  {'total':<{width}}  {trainable:>14,} / {total:>14,}  ({100 * trainable / max(total, 1):.3g}% trained)"
        )
        return "\n".join(lines)

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> StageOutput:
        device = self.llm.device
        cfg = self.config
        # Every trainable parameter takes part in every step (zero weight when unused), so gradients are tensors
        # on every process and in every step, whatever modality the batch holds.
        touch = sum(p.sum() for _, p in self.trainable_parameters()) * 0.0
        parts: dict[str, torch.Tensor] = {}
        if batch.size == 0:
            return StageOutput(touch, {"lm_loss": touch.detach()})
        ids = batch.input_ids.to(device)
        embeds = self.llm.embeddings(ids)
        embeds = self._insert_media(embeds, batch)
        out = self.llm.model(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask.to(device),
            output_hidden_states=True,
            use_cache=False,
        )
        per_row, valid = lm_loss_per_example(out.logits, batch.labels.to(device))
        lm_loss = per_row[valid].mean() if valid.any() else touch
        loss = touch + cfg.lm_weight * lm_loss
        parts["lm_loss"] = lm_loss.detach()
        if self.stage in (2, 3):
            hidden = out.hidden_states[self.llm.hidden_layer]
            align, diff = [], []
            for m in MODALITIES:
                spans = batch.spans.get(m)
                if not spans or m not in self.output_projectors:
                    continue
                n = len(self.llm.spans[m].token_ids)
                rows = torch.tensor([b for b, _ in spans], device=device)
                cols = torch.tensor([s for _, s in spans], device=device)[:, None] + torch.arange(
                    n, device=device
                )
                projector = self.output_projectors[m]
                dtype = next(projector.parameters()).dtype
                cond = projector(hidden[rows[:, None], cols].to(dtype), embeds[rows[:, None], cols].to(dtype))
                target = batch.targets[m].to(cond.device)
                align.append(_alignment(projector, cond, target, cfg.align_loss))
                if m in self.diffusion:
                    diff.append(self.diffusion[m](cond, batch.target_media[m], batch.seeds[m]))
            if align:
                align_loss = torch.cat(align).mean()
                loss = loss + cfg.align_weight * align_loss
                parts["align_loss"] = align_loss.detach()
            if diff:
                diffusion_loss = torch.cat(diff).mean()
                loss = loss + cfg.diffusion_weight * diffusion_loss
                parts["diffusion_loss"] = diffusion_loss.detach()
        return StageOutput(loss, parts)

    def _insert_media(self, embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
        pipe = self.pipe
        for m in MODALITIES:
            slots = batch.media.get(m)
            if not slots:
                continue
            enc, proj = pipe._encoder_for(m)
            items = [item for _, _, item in slots]
            todo = [i for i, item in enumerate(items) if item.value is not None]
            fresh = {}
            if todo:
                with torch.no_grad():
                    encoded = pipe.encoder(enc).encode(m, [items[i].value for i in todo])
                for j, i in enumerate(todo):
                    fresh[i] = encoded[j]
                    self.feature_cache.put(items[i].key, encoded[j].detach().cpu())
            features = torch.stack(
                [
                    fresh[i] if i in fresh else self.feature_cache[item.key].to(embeds.device)
                    for i, item in enumerate(items)
                ]
            )
            projector = (
                self.input_projectors[proj] if proj in self.input_projectors else pipe.input_projector(proj)
            )
            dtype = next(projector.parameters()).dtype
            projected = projector(features.to(embeds.device, dtype)).to(embeds.dtype)  # [n, k, hidden]
            k = projected.shape[1]
            rows = torch.tensor([b for b, _, _ in slots], device=embeds.device)[:, None].expand(-1, k)
            cols = torch.tensor([s for _, s, _ in slots], device=embeds.device)[:, None] + torch.arange(
                k, device=embeds.device
            )
            embeds = embeds.index_put(
                (rows.reshape(-1), cols.reshape(-1)), projected.reshape(-1, embeds.shape[-1])
            )
        return embeds

    # -- the end -------------------------------------------------------------------------------------------
    def finalize(self, out_dir) -> None:
        """Put the trained weights into the pipeline's components (signal rows merged; LoRA merged or split
        off as an adapter in ``out_dir/llm-lora``) so ``pipe.save_pretrained`` writes the result."""
        if self.signal is not None:
            self.signal.merge()
        if self.lora:
            with _quiet_peft():
                if self.config.lora.save == "adapter":
                    self.llm.model.save_pretrained(str(out_dir / "llm-lora"), safe_serialization=True)
                    self.llm.model = self.llm.model.unload()
                else:
                    self.llm.model = self.llm.model.merge_and_unload()
        self.llm.model.eval()
        self.input_projectors.eval()
        self.output_projectors.eval()
        self.requires_grad_(False)


def data_modalities(examples, stage: int, pipe) -> tuple[list[str], list[str]]:
    """The input modalities whose projectors train, and the output modalities whose projectors train."""
    ins = [m for m in MODALITIES if any(m in e.input_modalities for e in examples)]
    outs = [m for m in MODALITIES if any(m in e.output_modalities for e in examples)]
    from anygen.train.data import DataError

    for m in ins:
        if m not in pipe.input_modalities:
            raise DataError(f"the data gives {m} inputs but pipeline {pipe.spec.name!r} has no {m} encoder")
    if stage in (2, 3):
        for m in outs:
            if m not in pipe.output_modalities:
                raise DataError(f"the data asks for {m} outputs but pipeline {pipe.spec.name!r} makes no {m}")
    else:
        outs = []
    return ins, outs


def apply_lora_adapter(pipe, adapter_dir) -> None:
    """Merge a LoRA adapter written by a stage-3 run with ``lora.save: adapter`` (``OUT/llm-lora``) into
    ``pipe``'s LLM, giving the trained model: ``apply_lora_adapter(AnyToAnyPipeline.from_pretrained(OUT),
    OUT / "llm-lora")``. Only ``adapter_model.safetensors`` is read (never peft's pickled ``.bin``); a missing
    or malformed adapter is a :class:`~anygen.errors.WeightsError` (a missing or unreadable weights file is
    refused before the LLM is touched)."""
    from anygen.llm import peft_adapter

    with _quiet_peft():
        adapted = peft_adapter(pipe.llm.model, adapter_dir, "apply_lora_adapter")
        pipe.llm.model = adapted.merge_and_unload().eval()


@contextlib.contextmanager
def _quiet_peft():
    """peft calls transformers' deprecated ``is_gradient_checkpointing``; that FutureWarning is not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _alignment(projector: nn.Module, cond: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-example alignment loss; for a generator conditioned on several tensors, the sum of each tensor's (a pooled
    vector counts as a sequence of one)."""
    unpack = getattr(projector, "unpack", None)
    if unpack is None:
        return alignment_loss(cond, target, kind)
    pred, want = unpack(cond), unpack(target)
    return sum(
        alignment_loss(p if p.dim() == 3 else p[:, None], want[n] if want[n].dim() == 3 else want[n][:, None], kind)
        for n, p in pred.items()
    )
