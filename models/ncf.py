"""NeuMF (He et al., 2017, "Neural Collaborative Filtering"): the recommendation workload's model.

A generalised matrix factorisation branch (element-wise product of user and item embeddings) beside an MLP branch
on concatenated embeddings of its own; the two are concatenated and mapped to one logit.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


class NeuMF(nn.Module):
    def __init__(
        self, num_users: int, num_items: int, factors: int = 32, mlp_layers: tuple[int, ...] = (64, 32, 16)
    ) -> None:
        super().__init__()
        self.gmf_user = nn.Embedding(num_users, factors)
        self.gmf_item = nn.Embedding(num_items, factors)
        self.mlp_user = nn.Embedding(num_users, mlp_layers[0] // 2)
        self.mlp_item = nn.Embedding(num_items, mlp_layers[0] // 2)
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(mlp_layers):
            layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(factors + mlp_layers[-1], 1)
        for embedding in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(embedding.weight, std=0.01)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits (N,) of "user interacted with item"."""
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=1))
        return self.head(torch.cat([gmf, mlp], dim=1)).squeeze(1)
