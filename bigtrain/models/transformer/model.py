"""A GPT-style decoder-only transformer, read top to bottom like nanoGPT's model.py.

Layer names are chosen for tensor parallelism: `attn.q`, `attn.k`, `attn.v` and `mlp.fc` shard column-wise,
`attn.proj` and `mlp.proj` row-wise. Attention views its heads as `-1` so a tensor-parallel shard that holds
only some of the heads runs the same forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bigtrain.errors import UserError
from bigtrain.models.network import Network, sample_next


@dataclass(kw_only=True)
class GPTConfig:
    """A GPT decoder: a preset names every architecture field; the data supplies the sizes."""

    preset: str = "tiny"
    """Named preset that supplies every field left unset (see PRESETS)."""
    n_layer: int | None = None
    """Number of transformer blocks."""
    n_head: int | None = None
    """Attention heads per block; must divide n_embd."""
    n_embd: int | None = None
    """Width of the residual stream."""
    mlp_ratio: int | None = None
    """Hidden width of the MLP as a multiple of n_embd."""
    dropout: float | None = None
    """Dropout on embeddings, attention weights and residual branches (0 for pre-training)."""
    bias: bool | None = None
    """Biases in the Linear layers and LayerNorms (GPT-2 has them; False is a little faster)."""
    block_size: int | None = None
    """Longest context (learned positions); from the data, or at least the data's block size."""
    vocab_size: int | None = None
    """Vocabulary size; from the data, or at least the data's (e.g. 50304 pads GPT-2's 50257)."""


PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, mlp_ratio=4, dropout=0.0, bias=False),
    # nanoGPT's CPU "baby GPT" for character-level Shakespeare.
    "baby": dict(n_layer=4, n_head=4, n_embd=128, mlp_ratio=4, dropout=0.0, bias=False),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, mlp_ratio=4, dropout=0.0, bias=True),
    "gpt2-350m": dict(n_layer=24, n_head=16, n_embd=1024, mlp_ratio=4, dropout=0.0, bias=True),
    "gpt-760m": dict(n_layer=36, n_head=20, n_embd=1280, mlp_ratio=4, dropout=0.0, bias=False),
    # 1.02e9 parameters with a 50304 vocabulary and 1024 positions; 128-wide heads suit flash attention.
    "gpt-1b": dict(n_layer=24, n_head=14, n_embd=1792, mlp_ratio=4, dropout=0.0, bias=False),
}
"""Named architectures; block_size and vocab_size come from the data."""

INIT_STD = 0.02
"""GPT-2's standard deviation for every weight matrix and embedding."""


class Linear(nn.Linear):
    """nn.Linear initialised as in GPT-2: weights N(0, std), zero bias."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool, std: float = INIT_STD) -> None:
        # Set before nn.Linear.__init__, which calls reset_parameters.
        self.std = std
        super().__init__(d_in, d_out, bias=bias)

    def reset_parameters(self) -> None:
        """Weights N(0, std), bias zero."""
        nn.init.normal_(self.weight, mean=0.0, std=self.std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Embedding(nn.Embedding):
    """nn.Embedding initialised N(0, 0.02) as in GPT-2 (PyTorch's default is N(0, 1))."""

    def reset_parameters(self) -> None:
        """Weights N(0, 0.02)."""
        nn.init.normal_(self.weight, mean=0.0, std=INIT_STD)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through scaled_dot_product_attention."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise UserError(
                f"model.net.n_embd {cfg.n_embd} is not divisible by model.net.n_head {cfg.n_head}; "
                f"choose n_embd a multiple of n_head"
            )
        self.head_dim = cfg.n_embd // cfg.n_head
        self.dropout = cfg.dropout
        # Separate q/k/v (not one fused qkv) so column-wise tensor parallel splits each by heads.
        self.q = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.k = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.v = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        # GPT-2 scales residual projections by 1/sqrt(2 * n_layer): two per block add to the stream.
        self.proj = Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias, std=INIT_STD / math.sqrt(2 * cfg.n_layer))
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear, GELU, Linear."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        hidden = cfg.mlp_ratio * cfg.n_embd
        self.fc = Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.proj = Linear(hidden, cfg.n_embd, bias=cfg.bias, std=INIT_STD / math.sqrt(2 * cfg.n_layer))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(Network):
    """Token + position embeddings, n_layer blocks, a final LayerNorm, an LM head tied to the embedding."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        missing = [
            f for f in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if getattr(cfg, f) is None
        ]
        if missing:
            raise ValueError(f"GPTConfig is not resolved: {', '.join(missing)} unset")
        self.cfg = cfg
        self.wte = Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # The LM head is wte.weight itself (F.linear in forward), not a second module: one parameter, one
        # state-dict key, and nothing for a reset_parameters() to re-initialise behind the embedding's back.

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks: the units FSDP wraps one by one."""
        return list(self.h)

    def tp_plan(self, tp_size: int) -> dict[str, object]:
        """Each block's tensor-parallel plan (for `parallelize_module`) over `tp_size` ranks (Megatron-LM's).

        q, k, v and mlp.fc split their outputs (whole heads per rank), attn.proj and mlp.proj their inputs, so
        a block needs one all-reduce after attention and one after the MLP; embeddings and norms replicate.
        """
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        if self.cfg.n_head % tp_size:
            raise UserError(
                f"tensor_parallel_size {tp_size} does not divide the {self.cfg.n_head} attention heads "
                f"(model.net.n_head); use a divisor of {self.cfg.n_head}"
            )
        column, row = ColwiseParallel, RowwiseParallel
        return {"attn.q": column(), "attn.k": column(), "attn.v": column(), "attn.proj": row(),
                "mlp.fc": column(), "mlp.proj": row()}  # fmt: skip

    def activation_bytes(
        self,
        batch: int,
        sample_shape: tuple[int, ...] | None,
        compute_bytes: int,
        tp: int,
        checkpointing: bool,
    ) -> float:
        """Bytes kept for backward at `batch` sequences of the data's length T (else block_size) per device.

        L*b*T*C*(4 + (4 + 2m)/tp)*d + b*T*V*(d + 8): per block the residual input, two LayerNorm inputs and
        outputs (replicated under TP), q, k, v, the attention output and the two m*C-wide MLP activations
        (split by TP); a fused attention kernel keeps no T x T scores; the logits plus the fp32 log-softmax
        and its gradient. Activation checkpointing keeps only each block's input (L*b*T*C*d) and recomputes
        one block at a time.
        """
        T = sample_shape[0] if sample_shape else self.cfg.block_size
        L, C, m, V, d = (
            self.cfg.n_layer,
            self.cfg.n_embd,
            self.cfg.mlp_ratio,
            self.cfg.vocab_size,
            compute_bytes,
        )
        btc = batch * T * C
        block = btc * (4 + (4 + 2 * m) / tp) * d
        blocks = L * btc * d + block if checkpointing else L * block
        return blocks + 2 * btc * d + batch * T * V * (d + 8)  # + final LayerNorm, logits and the loss

    def forward(self, idx: Tensor) -> Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab_size)."""
        T = idx.shape[1]
        if self.cfg.block_size < T:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)  # (B, T, C)
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight)  # (B, T, V)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Extend (B, T) token ids by `max_new_tokens` samples, cropping the context to block_size."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.cfg.block_size :]  # (B, <=block_size)
            logits = self(context)[:, -1, :]  # (B, V)
            idx = torch.cat([idx, sample_next(logits, temperature, top_k, generator)], dim=1)
        return idx

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the position embedding (the token one is the LM head)."""
        n = super().num_params()
        return n - self.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM's 6N + 12 L C T estimate."""
        T = seq_len if seq_len is not None else self.cfg.block_size
        return 6 * self.num_params() + 12 * self.cfg.n_layer * self.cfg.n_embd * T
