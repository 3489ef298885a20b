"""A small decoder-only Transformer over bytes: the lm workload's model, and the byte tokenizer it reads.

The tokenizer is the identity on UTF-8 bytes (vocabulary 256): nothing to train, ship or pin beside the weights,
every text round-trips exactly, and no input is out of vocabulary. Its cost is sequences about three times longer
than a BPE's on English or code, which a model of this size can afford.

The blocks are PyTorch's own ``nn.TransformerEncoderLayer`` (pre-norm, GELU) run with a causal mask, as
``SeqTransformer`` builds on ``nn.Transformer``: no hand-written attention. ``cached_step`` recomputes the same
layers one position at a time from their weights, keeping each layer's keys and values (incremental decoding);
``greedy_decode`` is the reference it must match. ``cached_block`` is the server's form of the same arithmetic
(server/generative/lm_engine.py): several sequences at once, each at its own position, each a row ("slot") of one
preallocated ``KVCache``, a block of new tokens per row (a prompt's prefill) or one (a decode step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB_SIZE = 256  # one token per byte value


def encode(text: str) -> list[int]:
    """The byte tokenizer: UTF-8 bytes as token ids."""
    return list(text.encode("utf-8"))


def decode(tokens: list[int]) -> str:
    """Token ids back to text; a cut-off multi-byte character becomes U+FFFD instead of an error."""
    return bytes(tokens).decode("utf-8", errors="replace")


@dataclass
class KVCache:
    """Keys and values of every layer, one row ("slot") per sequence: each (slots, heads, context, head_dim).
    A row's positions past its sequence's length hold stale values; ``cached_block`` writes a position before
    any query reads it, so a freed slot is reused as it is."""

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0]


class TinyLM(nn.Module):
    """Token + learned position embeddings, ``layers`` pre-norm causal Transformer blocks, final norm, linear head."""

    def __init__(
        self,
        d_model: int = 128,
        nhead: int = 4,
        layers: int = 4,
        ff: int = 512,
        context: int = 128,
        dropout: float = 0.0,
        vocab_size: int = VOCAB_SIZE,
    ) -> None:
        super().__init__()
        self.context, self.nhead = context, nhead
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(context, d_model)
        block = nn.TransformerEncoderLayer(
            d_model, nhead, ff, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits (N, T, vocab) for the token after each position of ``tokens`` (N, T), T <= context."""
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"{length} tokens; the model's context is {self.context}")
        positions = torch.arange(length, device=tokens.device)
        hidden = self.tokens(tokens) + self.positions(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        hidden = self.blocks(hidden, mask=causal, is_causal=True)
        return self.out(self.norm(hidden))

    @torch.no_grad()
    def greedy_decode(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """The reference decode: ``max_new_tokens`` argmax tokens after ``prompt``, each from a full forward pass
        over the last ``context`` tokens. Deterministic for given weights; what a server's output must equal."""
        if not prompt:
            raise ValueError("an empty prompt: give at least one token")
        device = self.out.weight.device
        tokens = list(prompt)
        for _ in range(max_new_tokens):
            window = torch.tensor([tokens[-self.context :]], device=device)
            tokens.append(int(self(window)[0, -1].argmax()))
        return tokens[len(prompt) :]

    @torch.no_grad()
    def cached_step(self, token: Tensor, position: int, cache: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Logits (N, vocab) for the next token after ``token`` (N,) at ``position``, given ``cache`` (one
        (keys, values) pair of shape (N, heads, position, head_dim) per layer, empty list at position 0), which
        it extends in place. The same arithmetic as ``forward`` (dropout off), one position at a time."""
        if position >= self.context:
            raise ValueError(f"position {position} is past the model's context {self.context}")
        hidden = self.tokens(token) + self.positions.weight[position]
        for index, layer in enumerate(self.blocks.layers):
            attn = layer.self_attn
            x = layer.norm1(hidden)
            q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            q, k, v = (t.view(t.shape[0], self.nhead, 1, -1) for t in (q, k, v))
            if index < len(cache):
                k, v = torch.cat([cache[index][0], k], dim=2), torch.cat([cache[index][1], v], dim=2)
                cache[index] = (k, v)
            else:
                cache.append((k, v))
            mixed = F.scaled_dot_product_attention(q, k, v).reshape(hidden.shape)
            hidden = hidden + attn.out_proj(mixed)
            hidden = hidden + layer.linear2(layer.activation(layer.linear1(layer.norm2(hidden))))
        return self.out(self.norm(hidden))

    @torch.no_grad()
    def greedy_decode_cached(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """``greedy_decode`` with a key/value cache: the prompt is fed once, then one new token per step. Stops
        early at the context's end (no sliding window: a cache cannot forget its first position)."""
        if not prompt:
            raise ValueError("an empty prompt: give at least one token")
        if len(prompt) > self.context:
            raise ValueError(f"{len(prompt)} prompt tokens; the model's context is {self.context}")
        device = self.out.weight.device
        cache: list[tuple[Tensor, Tensor]] = []
        logits: Tensor | None = None
        for position, token in enumerate(prompt):
            logits = self.cached_step(torch.tensor([token], device=device), position, cache)
        out: list[int] = []
        while logits is not None and len(out) < max_new_tokens:
            out.append(int(logits[0].argmax()))
            position = len(prompt) + len(out) - 1  # where the new token goes
            if len(out) == max_new_tokens or position >= self.context:
                break
            logits = self.cached_step(torch.tensor([out[-1]], device=device), position, cache)
        return out

    def new_cache(self, slots: int) -> KVCache:
        """An empty cache for ``slots`` sequences of up to ``context`` tokens, on the model's device and dtype."""
        weight = self.out.weight
        shape = (slots, self.nhead, self.context, self.out.in_features // self.nhead)
        layers = len(self.blocks.layers)
        return KVCache(
            [torch.zeros(shape, device=weight.device, dtype=weight.dtype) for _ in range(layers)],
            [torch.zeros(shape, device=weight.device, dtype=weight.dtype) for _ in range(layers)],
        )

    @torch.no_grad()
    def cached_block(self, tokens: Tensor, rows: Tensor, starts: Tensor, cache: KVCache) -> Tensor:
        """Logits (B, T, vocab) after each of ``tokens`` (B, T): row b's tokens sit at positions ``starts[b]``,
        ``starts[b] + 1``, ... of cache slot ``rows[b]`` (distinct rows), attend to that slot's positions up to
        their own, and leave their keys and values there. ``cached_step``'s arithmetic, batched over sequences at
        different positions; a row's positions after its real tokens may hold padding (T is the longest block):
        what they write is overwritten before it is read, and their logits are to be ignored."""
        batch, length = tokens.shape
        positions = starts[:, None] + torch.arange(length, device=tokens.device)  # (B, T)
        end = int(positions.max()) + 1
        if end > self.context:
            raise ValueError(f"position {end - 1} is past the model's context {self.context}")
        hidden = self.tokens(tokens) + self.positions(positions)
        # query (b, t) sees keys at positions <= its own: (B, 1, T, end), broadcast over heads
        visible = (torch.arange(end, device=tokens.device) <= positions[:, :, None])[:, None]
        for index, layer in enumerate(self.blocks.layers):
            attn = layer.self_attn
            x = layer.norm1(hidden)
            q, k, v = (
                t.view(batch, length, self.nhead, -1).transpose(1, 2)  # (B, heads, T, head_dim)
                for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            )
            keys, values = cache.keys[index], cache.values[index]
            keys[rows[:, None], :, positions] = k.transpose(1, 2)  # indexed as (B, T, heads, head_dim)
            values[rows[:, None], :, positions] = v.transpose(1, 2)
            mixed = F.scaled_dot_product_attention(q, keys[rows, :, :end], values[rows, :, :end], attn_mask=visible)
            hidden = hidden + attn.out_proj(mixed.transpose(1, 2).reshape(hidden.shape))
            hidden = hidden + layer.linear2(layer.activation(layer.linear1(layer.norm2(hidden))))
        return self.out(self.norm(hidden))
