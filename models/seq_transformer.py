"""A small encoder-decoder Transformer for token sequences: the translation workload's model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

PAD, BOS, EOS = 0, 1, 2


class SeqTransformer(nn.Module):
    """Token + learned position embeddings around ``nn.Transformer`` (batch first), tied to nothing."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        nhead: int = 4,
        layers: int = 2,
        ff: int = 256,
        max_len: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.positions = nn.Embedding(max_len, d_model)
        self.transformer = nn.Transformer(d_model, nhead, layers, layers, ff, dropout=dropout, batch_first=True)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = d_model**0.5

    def _embed(self, seq: Tensor) -> Tensor:
        positions = torch.arange(seq.shape[1], device=seq.device)
        return self.tokens(seq) * self.scale + self.positions(positions)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits (N, T, vocab) for the next token at each position of ``tgt_in`` (teacher forcing)."""
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        hidden = self.transformer(
            self._embed(src),
            self._embed(tgt_in),
            tgt_mask=causal,
            tgt_is_causal=True,
            src_key_padding_mask=src == PAD,
            memory_key_padding_mask=src == PAD,
        )
        return self.out(hidden)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, steps: int) -> Tensor:
        """``steps`` tokens per sequence, each the argmax given the ones before (starting from BOS)."""
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        for _ in range(steps):
            next_token = self(src, out)[:, -1].argmax(dim=-1, keepdim=True)
            out = torch.cat([out, next_token], dim=1)
        return out[:, 1:]
