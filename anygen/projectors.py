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
