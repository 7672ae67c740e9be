"""Input projectors (encoder features -> LLM embeddings) and output projectors (LLM -> generator space).

Output projectors follow NExT-GPT's ``TextFcLayer``: their input is the LLM hidden states at the signal
tokens **plus** those tokens' input embeddings; they return ``[B, num_queries, out_dim]``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

INPUT_PROJECTOR_TYPES = ("linear", "mlp")
OUTPUT_PROJECTOR_TYPES = ("linear", "mlp", "transformer")


class InputProjector(nn.Module):
    """Maps one encoder vector ``[B, in_dim]`` to ``num_tokens`` LLM embeddings ``[B, num_tokens, out_dim]``.

    ``linear`` is NExT-GPT's ``llama_proj``; ``mlp`` adds a GELU hidden layer of width ``out_dim``.
    """

    def __init__(self, kind: str, in_dim: int, out_dim: int, num_tokens: int = 1) -> None:
        super().__init__()
        if kind not in INPUT_PROJECTOR_TYPES:
            raise ValueError(f"input projector type must be one of {INPUT_PROJECTOR_TYPES}, got {kind!r}")
        self.kind, self.in_dim, self.out_dim, self.num_tokens = kind, in_dim, out_dim, num_tokens
        width = out_dim * num_tokens
        if kind == "linear":
            self.proj = nn.Linear(in_dim, width)
        else:
            self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features).view(features.shape[0], self.num_tokens, self.out_dim)


class OutputProjector(nn.Module):
    """Maps signal-token states ``[B, n_signal, in_dim]`` to generator conditioning ``[B, num_queries, out_dim]``.

    * ``linear`` / ``mlp``: per token, so ``num_queries == n_signal``.
    * ``transformer``: NExT-GPT's layer: ``Linear(in->d)`` -> ``nn.Transformer`` (pre-norm, batch first,
      no dropout, no positional encoding) whose decoder reads ``num_queries`` learned queries -> ``Linear(d->out)``.
    """

    def __init__(
        self,
        kind: str,
        in_dim: int,
        out_dim: int,
        num_queries: int,
        d_model: int = 512,
        nhead: int = 4,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        dim_feedforward: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in OUTPUT_PROJECTOR_TYPES:
            raise ValueError(f"output projector type must be one of {OUTPUT_PROJECTOR_TYPES}, got {kind!r}")
        self.kind, self.in_dim, self.out_dim, self.num_queries = kind, in_dim, out_dim, num_queries
        if kind == "linear":
            self.model = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.model = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
        else:
            self.fc = nn.Linear(in_dim, d_model)
            with warnings.catch_warnings():  # "enable_nested_tensor ... norm_first": expected, harmless
                warnings.filterwarnings("ignore", message="enable_nested_tensor", category=UserWarning)
                self.tfm = nn.Transformer(
                    d_model=d_model,
                    nhead=nhead,
                    num_encoder_layers=num_encoder_layers,
                    num_decoder_layers=num_decoder_layers,
                    dim_feedforward=dim_feedforward or 4 * d_model,
                    dropout=0.0,
                    batch_first=True,
                    norm_first=True,
                )
            self.model = nn.Linear(d_model, out_dim)
            self.query_embs = nn.Parameter(torch.randn(1, num_queries, d_model))

    def forward(self, hidden_states: torch.Tensor, input_embeds: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape != input_embeds.shape or hidden_states.shape[-1] != self.in_dim:
            raise ValueError(
                f"output projector expects hidden_states and input_embeds of shape [B, n, {self.in_dim}], "
                f"got {tuple(hidden_states.shape)} and {tuple(input_embeds.shape)}"
            )
        x = hidden_states + input_embeds
        if self.kind != "transformer":
            return self.model(x)
        x = self.fc(x)
        x = self.tfm(x, self.query_embs.expand(x.shape[0], -1, -1))
        return self.model(x)


def output_projector_from_state_dict(state_dict: dict[str, torch.Tensor], nhead: int = 4) -> OutputProjector:
    """Build an :class:`OutputProjector` whose widths, depths and query count are read from ``state_dict``.

    The kind is inferred from the keys: ``tfm.*`` -> transformer, ``model.2.weight`` -> mlp, else linear.
    (Head count cannot be read from shapes; NExT-GPT uses 4.)
    """
    if any(k.startswith("tfm.") for k in state_dict):
        fc = state_dict["fc.weight"]
        d_model, in_dim = fc.shape
        out_dim = state_dict["model.weight"].shape[0]
        num_queries = state_dict["query_embs"].shape[1]

        def depth(part: str) -> int:
            prefix = f"tfm.{part}.layers."
            return 1 + max(int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix))

        ffn = state_dict["tfm.encoder.layers.0.linear1.weight"].shape[0]
        proj = OutputProjector(
            "transformer",
            in_dim,
            out_dim,
            num_queries,
            d_model=d_model,
            nhead=nhead,
            num_encoder_layers=depth("encoder"),
            num_decoder_layers=depth("decoder"),
            dim_feedforward=ffn,
        )
    elif "model.2.weight" in state_dict:
        out_dim, _ = state_dict["model.2.weight"].shape
        in_dim = state_dict["model.0.weight"].shape[1]
        proj = OutputProjector("mlp", in_dim, out_dim, num_queries=0)
    else:
        out_dim, in_dim = state_dict["model.weight"].shape
        proj = OutputProjector("linear", in_dim, out_dim, num_queries=0)
    proj.load_state_dict(state_dict, strict=True)
    return proj


class MultiOutputProjector(nn.Module):
    """One :class:`OutputProjector` head per conditioning tensor of a generator with several (SDXL's
    ``prompt_embeds`` and ``pooled_prompt_embeds``...). A sequence head gives ``[B, tokens, width]``; a pooled head
    is a head of one query (``transformer``) or the mean over the signal tokens (``linear``/``mlp``) giving
    ``[B, width]``. The output is packed in the layout's order (``[B, 1, total]``,
    :meth:`~anygen.generators.conditioning.ConditioningLayout.pack`)."""

    def __init__(self, layout, kind: str, in_dim: int, heads: dict[str, tuple[int, int]] | None = None, **kw) -> None:
        """``heads``: per tensor name, ``(out_dim, num_queries)`` if declared (default: the tensor's own)."""
        super().__init__()
        self.layout = layout
        self.kind = kind
        self.heads = nn.ModuleDict()
        for t in layout.tensors:
            out_dim, queries = (heads or {}).get(t.name, (t.width, t.tokens))
            self.heads[t.name] = OutputProjector(kind, in_dim, out_dim, queries, **kw)

    def forward(self, hidden_states: torch.Tensor, input_embeds: torch.Tensor) -> torch.Tensor:
        values = {}
        for t in self.layout.tensors:
            out = self.heads[t.name](hidden_states, input_embeds)
            values[t.name] = out.mean(dim=1) if t.pooled else out
        return self.layout.pack(values, "output projector")

    def unpack(self, packed: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.layout.unpack(packed)


# -- input projectors over token sequences ----------------------------------------------------------------------
SEQUENCE_PROJECTOR_TYPES = ("mlp-tokens", "resampler")


class TokenMLPProjector(nn.Module):
    """LLaVA's projector (``mlp-tokens``): ``Linear(in->out)``, GELU, ``Linear(out->out)`` on every token, so
    ``[B, T, in_dim]`` becomes ``[B, T, out_dim]`` (as many LLM embeddings as the encoder gives tokens)."""

    kind = "mlp-tokens"

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_tokens(features, self.in_dim, self.kind)
        return self.proj(features)


class _ResamplerLayer(nn.Module):
    """Pre-norm cross-attention of the queries to the tokens (and themselves, as Flamingo's Perceiver), then an
    MLP; both residual."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(d_model)
        self.norm_queries = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0, batch_first=True)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.norm_queries(queries)
        kv = torch.cat([self.norm_tokens(tokens), q], dim=1)
        queries = queries + self.attn(q, kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))


class ResamplerProjector(nn.Module):
    """A query resampler (``resampler``, Perceiver / Q-Former style): ``num_tokens`` learned queries of width
    ``d_model`` cross-attend to the encoder's tokens through ``num_layers`` layers, then ``LayerNorm`` +
    ``Linear(d_model->out_dim)``: ``[B, T, in_dim]`` (any ``T``) becomes ``[B, num_tokens, out_dim]``."""

    kind = "resampler"

    def __init__(
        self, in_dim: int, out_dim: int, num_tokens: int, d_model: int, nhead: int = 4, num_layers: int = 2
    ) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"resampler: nhead={nhead} does not divide d_model={d_model}")
        self.in_dim, self.out_dim, self.num_tokens = in_dim, out_dim, num_tokens
        self.input = nn.Linear(in_dim, d_model)
        self.queries = nn.Parameter(torch.randn(num_tokens, d_model) * 0.02)
        self.layers = nn.ModuleList(_ResamplerLayer(d_model, nhead) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_tokens(features, self.in_dim, self.kind)
        tokens = self.input(features)
        queries = self.queries.to(tokens.dtype).expand(features.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        return self.output(self.norm(queries))


def _check_tokens(features: torch.Tensor, in_dim: int, kind: str) -> None:
    if features.dim() != 3 or features.shape[-1] != in_dim:
        raise ValueError(
            f"{kind} input projector expects encoder tokens [B, tokens, {in_dim}], got {tuple(features.shape)}"
        )


def make_input_projector(
    kind: str,
    in_dim: int,
    out_dim: int,
    num_tokens: int = 1,
    *,
    d_model: int | None = None,
    nhead: int = 4,
    num_layers: int = 2,
) -> nn.Module:
    """The input projector of type ``kind``: :class:`InputProjector` for one pooled vector per input (``linear``,
    ``mlp``), :class:`TokenMLPProjector` or :class:`ResamplerProjector` (``d_model`` default: ``in_dim``) for a
    token sequence."""
    if kind in INPUT_PROJECTOR_TYPES:
        return InputProjector(kind, in_dim, out_dim, num_tokens)
    if kind == "mlp-tokens":
        return TokenMLPProjector(in_dim, out_dim)
    if kind == "resampler":
        return ResamplerProjector(in_dim, out_dim, num_tokens, d_model or in_dim, nhead, num_layers)
    raise ValueError(
        f"input projector type must be one of {INPUT_PROJECTOR_TYPES + SEQUENCE_PROJECTOR_TYPES}, got {kind!r}"
    )
