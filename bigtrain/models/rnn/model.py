"""LSTM/GRU networks for two tasks: character-level language modelling and row-wise image classification.

The layers are one nn.LSTM/nn.GRU each, in a ModuleList, so FSDP can wrap them one by one (`blocks()`).
For classification an image (C, H, W) is read as a sequence of H rows of C * W features (sequential
MNIST style) and the last time step's output is classified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bigtrain.models.network import Network, sample_next


@dataclass(kw_only=True)
class RNNConfig:
    """A stacked LSTM/GRU: a preset names the architecture; the data supplies the sizes."""

    preset: str = "tiny"
    """Named preset that supplies every field left unset (see PRESETS)."""
    task: Literal["lm", "classify"] | None = None
    """'lm': next-token prediction over a vocabulary; 'classify': one label per image, read row by row."""
    cell: Literal["lstm", "gru"] | None = None
    """Recurrent cell."""
    n_layer: int | None = None
    """Number of stacked recurrent layers."""
    hidden_size: int | None = None
    """Hidden state width of every layer."""
    embd_size: int | None = None
    """Token embedding width (task 'lm' only)."""
    dropout: float | None = None
    """Dropout between layers and before the head."""
    vocab_size: int | None = None
    """Vocabulary size (task 'lm'); from the data, or at least the data's."""
    num_classes: int | None = None
    """Number of classes (task 'classify'); from the data."""
    input_size: int | None = None
    """Features per time step (task 'classify'): channels * image width; from the data."""


PRESETS: dict[str, dict] = {
    "tiny": dict(task="lm", cell="lstm", n_layer=2, hidden_size=64, embd_size=32, dropout=0.0),
    # char-rnn's small and medium models.
    "small": dict(task="lm", cell="lstm", n_layer=2, hidden_size=256, embd_size=64, dropout=0.1),
    "medium": dict(task="lm", cell="lstm", n_layer=3, hidden_size=512, embd_size=128, dropout=0.2),
    "large": dict(task="lm", cell="lstm", n_layer=3, hidden_size=1024, embd_size=256, dropout=0.3),
}
"""Named architectures; vocab_size, or num_classes and input_size, come from the data."""

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}

State = Tensor | tuple[Tensor, Tensor]
"""One layer's recurrent state: h (1, B, H), or (h, c) for an LSTM."""


def _data_fields(cfg: RNNConfig) -> tuple[str, ...]:
    return ("vocab_size",) if cfg.task == "lm" else ("num_classes", "input_size")


class RNN(Network):
    """Embedding (lm) or image rows (classify) -> stacked LSTM/GRU layers -> a linear head."""

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        needed = ("task", "cell", "n_layer", "hidden_size", "embd_size", "dropout", *_data_fields(cfg))
        missing = [f for f in needed if getattr(cfg, f) is None]
        if missing:
            raise ValueError(f"RNNConfig is not resolved: {', '.join(missing)} unset")
        self.cfg = cfg
        self.lm = cfg.task == "lm"
        H = cfg.hidden_size
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embd_size) if self.lm else None
        d_in = cfg.embd_size if self.lm else cfg.input_size
        cell = CELLS[cfg.cell]
        self.layers = nn.ModuleList(
            cell(d_in if i == 0 else H, H, batch_first=True) for i in range(cfg.n_layer)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(H, cfg.vocab_size if self.lm else cfg.num_classes)

    def blocks(self) -> list[nn.Module]:
        """The recurrent layers: the units FSDP wraps one by one."""
        return list(self.layers)

    def activation_bytes(
        self,
        batch: int,
        sample_shape: tuple[int, ...] | None,
        compute_bytes: int,
        tp: int,
        checkpointing: bool,
    ) -> float:
        """Bytes kept for backward at `batch` samples: L*b*T*H*(gates + 2)*d + b*T*E*d + logits.

        T is the data's sequence length (lm: (T,) token windows; classify: the rows of (C, H, W) images);
        gates: 4 LSTM, 3 GRU. Activation checkpointing keeps each layer's input and recomputes one layer.
        """
        T = (sample_shape[0] if self.lm else sample_shape[1]) if sample_shape else 1
        gates = 4 if self.cfg.cell == "lstm" else 3
        H, L, d = self.cfg.hidden_size, self.cfg.n_layer, compute_bytes
        out = self.cfg.vocab_size if self.lm else 0
        layer = batch * T * H * (gates + 2) * d
        layers = L * batch * T * H * d + layer if checkpointing else L * layer
        return layers + batch * T * self.cfg.embd_size * d + batch * T * out * (d + 8)

    def run(self, h: Tensor, states: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """(B, T, d_in) through every layer -> (B, T, H) and each layer's final state."""
        new_states = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = self.drop(h)
            h, s = layer(h, None if states is None else states[i])  # (B, T, H)
            new_states.append(s)
        return h, new_states

    def forward(
        self, x: Tensor, states: list[State] | None = None, *, return_states: bool = False
    ) -> Tensor | tuple[Tensor, list[State]]:
        """lm: ids (B, T) -> logits (B, T, V); classify: images (B, C, H, W) -> logits (B, num_classes).

        `states` continues from earlier steps and `return_states` also returns each layer's final state.
        """
        if self.lm:
            h, states = self.run(self.embed(x), states)  # (B, T, H)
            logits = self.head(self.drop(h))  # (B, T, V)
        else:
            B, C, rows, W = x.shape
            seq = x.permute(0, 2, 1, 3).reshape(B, rows, C * W)  # (B, rows, C*W): one row per step
            h, states = self.run(seq, states)  # (B, rows, H)
            logits = self.head(self.drop(h[:, -1]))  # (B, num_classes)
        return (logits, states) if return_states else logits

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend (B, T) token ids by `max_new_tokens` samples, carrying the hidden state (task 'lm')."""
        if not self.lm:
            raise ValueError("generate needs task 'lm'")
        # Every step goes through self(...), not the submodules, so a sharded net's hooks gather its weights.
        logits, states = self(idx, return_states=True)  # (B, T, V)
        for i in range(max_new_tokens):
            nxt = sample_next(logits[:, -1], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            if i + 1 < max_new_tokens:
                logits, states = self(nxt, states, return_states=True)  # (B, 1, V)
        return idx
