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
        max_len: int = 32,  # positions: source and target lengths, BOS and EOS included
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
        """``steps`` tokens per sequence, each the argmax given the ones before (starting from BOS).

        The source is encoded once; decoding stops early once every sequence has produced EOS, and the positions
        left are PAD (what the model says after EOS is no part of its answer).
        """
        padding = src == PAD
        memory = self.transformer.encoder(self._embed(src), src_key_padding_mask=padding)
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(steps):
            causal = nn.Transformer.generate_square_subsequent_mask(out.shape[1], device=src.device)
            hidden = self.transformer.decoder(
                self._embed(out), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=padding
            )
            next_token = self.out(hidden[:, -1]).argmax(dim=-1)
            next_token = torch.where(done, PAD, next_token)
            out = torch.cat([out, next_token[:, None]], dim=1)
            done |= next_token == EOS
            if bool(done.all()):
                break
        decoded = torch.full((src.shape[0], steps), PAD, dtype=torch.long, device=src.device)
        decoded[:, : out.shape[1] - 1] = out[:, 1:]
        return decoded
