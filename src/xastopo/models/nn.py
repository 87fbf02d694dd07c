"""The paper's network (Andrejevic et al. 2022), for any number of absorbers per material.

Per absorber: a spectral MLP (n_points→256→64) and an atom-type embedding (one-hot Z, 93→93,
implemented as an embedding lookup plus bias, which is the same linear map). Their outer product
(64×93) is summed over the material's absorbers using the padding mask, then a dense head
5952→256→64→1 gives one logit. The masked sum makes the output independent of absorber order and of
padding, and keeps the ONNX graph to plain tensor ops (no scatter) with dynamic batch and absorbers.
"""

from __future__ import annotations

import torch
from torch import nn

from xastopo.elements import N_TYPES


def mlp(sizes: list[int], dropout: float, last_activation: bool) -> nn.Sequential:
    """Linear layers with ReLU + dropout after each hidden layer."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class XasTopoNet(nn.Module):
    """Spectra ⊗ atom types, summed over absorbers → P(topological) logit.

    ``use_spectra=False`` is the type-only ablation: the material vector is the masked sum of type
    embeddings (93), fed to the same head. ``n_points`` (the spectra's width) has no default: it is
    the fitted preprocessor's (``models/preprocessor.json``), see :func:`build_net`.
    """

    def __init__(self, n_points: int, spec_hidden: int = 256, spec_out: int = 64,
                 type_embed: int = N_TYPES, head_hidden: tuple[int, ...] = (256, 64),
                 dropout: float = 0.5, use_spectra: bool = True) -> None:
        super().__init__()
        self.use_spectra = use_spectra
        self.type_weight = nn.Embedding(N_TYPES, type_embed)
        self.type_bias = nn.Parameter(torch.zeros(type_embed))
        if use_spectra:
            self.spectral = mlp([n_points, spec_hidden, spec_out], dropout, last_activation=True)
            width = spec_out * type_embed
        else:
            self.spectral = None
            width = type_embed
        self.head = mlp([width, *head_hidden, 1], dropout, last_activation=False)

    def forward(self, spectra: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """spectra [B, A, P] float, z [B, A] int64, mask [B, A] float → logits [B]."""
        t = self.type_weight(z) + self.type_bias  # [B, A, T] = Linear(one_hot(z))
        if self.spectral is None:
            feat = torch.einsum("bat,ba->bt", t, mask)
        else:
            s = self.spectral(spectra)  # [B, A, S]
            feat = torch.einsum("bas,bat,ba->bst", s, t, mask).flatten(1)
        return self.head(feat).squeeze(-1)


class AnyEdgeNet(XasTopoNet):
    """The paper's network with every element of the composition as an absorber.

    An element with a spectrum goes through the spectral MLP as in the paper; one without (no
    measurement, no computed edge, or no training statistics for its element) enters with a learned
    "no spectrum" vector in place of its spectral features, so its type still reaches the outer product
    and the head. ``has_spectrum`` [B, A] is 1 where the row of ``spectra`` is real, 0 otherwise.
    """

    def __init__(self, n_points: int, spec_hidden: int = 256, spec_out: int = 64,
                 type_embed: int = N_TYPES, head_hidden: tuple[int, ...] = (256, 64),
                 dropout: float = 0.5) -> None:
        super().__init__(n_points, spec_hidden, spec_out, type_embed, head_hidden, dropout, use_spectra=True)
        # non-negative like the ReLU outputs it stands in for; zeros would erase the element's type
        self.no_spectrum = nn.Parameter(torch.rand(spec_out))

    def forward(self, spectra: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                has_spectrum: torch.Tensor) -> torch.Tensor:
        """spectra [B, A, P], z [B, A] int64, mask [B, A], has_spectrum [B, A] → logits [B]."""
        t = self.type_weight(z) + self.type_bias
        s = self._sparse_spectral(spectra, mask, has_spectrum) if self.training else \
            self._dense_spectral(spectra, has_spectrum)
        # the outer product summed over absorbers as one batched matmul [B, S, A] @ [B, A, T]: an
        # einsum over (s, t, mask) broadcasts a [B, S, T, A] product first, 3x the time of the step
        feat = torch.bmm((s * mask.unsqueeze(-1)).transpose(1, 2), t).flatten(1)
        return self.head(feat).squeeze(-1)

    def _dense_spectral(self, spectra: torch.Tensor, has_spectrum: torch.Tensor) -> torch.Tensor:
        """Spectral features of every row, the "no spectrum" vector where there is none: plain tensor
        ops with static shapes (the exported graph)."""
        h = has_spectrum.unsqueeze(-1)
        return h * self.spectral(spectra) + (1.0 - h) * self.no_spectrum

    def _sparse_spectral(self, spectra: torch.Tensor, mask: torch.Tensor,
                         has_spectrum: torch.Tensor) -> torch.Tensor:
        """The same values, with the spectral MLP run only on the rows that have a spectrum (training:
        ~0.5 % of absorber rows carry one, so the dense form spends most of a step on padding)."""
        rows = (has_spectrum * mask).flatten().nonzero().squeeze(1)
        width = self.no_spectrum.shape[0]
        s = self.no_spectrum.expand(*has_spectrum.shape, width).reshape(-1, width)
        s = s.index_copy(0, rows, self.spectral(spectra.reshape(-1, spectra.shape[-1])[rows]))
        return s.view(*has_spectrum.shape, width)


class CalibratedEnsemble(nn.Module):
    """Members of :class:`AnyEdgeNet` → (calibrated P(topological), its uncertainty), the served graph.

    Each member's logit is calibrated as ``logit / temperature + bias`` (Platt scaling, both fitted on
    validation: the class weighting of training shifts the logits, which a temperature alone cannot
    undo); the probability is the members' mean and the uncertainty their standard deviation (0 for a
    single member).
    """

    def __init__(self, nets: list[AnyEdgeNet], temperature: float, bias: float = 0.0) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.register_buffer("inv_temperature", torch.tensor(1.0 / float(temperature)))
        self.register_buffer("bias", torch.tensor(float(bias)))

    def forward(self, spectra: torch.Tensor, z: torch.Tensor, mask: torch.Tensor,
                has_spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([n(spectra, z, mask, has_spectrum) for n in self.nets])  # [M, B]
        p = torch.sigmoid(logits * self.inv_temperature + self.bias)
        mean = p.mean(0)
        return mean, ((p - mean) ** 2).mean(0).sqrt()


class ProbabilityModel(nn.Module):
    """Wraps a network to output probabilities (the exported and served graph)."""

    def __init__(self, net: XasTopoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, spectra: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(spectra, z, mask))


def build_any_edge_net(block: dict, n_points: int) -> AnyEdgeNet:
    """:class:`AnyEdgeNet` of a params block (``nn_any``) for spectra of ``n_points`` (the preprocessor's)."""
    return AnyEdgeNet(
        n_points=n_points, spec_hidden=int(block["spec_hidden"]), spec_out=int(block["spec_out"]),
        type_embed=int(block["type_embed"]), head_hidden=tuple(int(h) for h in block["head_hidden"]),
        dropout=float(block["dropout"]),
    )


def build_net(params: dict, n_points: int, use_spectra: bool) -> XasTopoNet:
    """The network of a params block (``{"nn": block}``) for spectra of ``n_points`` (the preprocessor's)."""
    p = params["nn"]
    return XasTopoNet(
        n_points=n_points, spec_hidden=int(p["spec_hidden"]), spec_out=int(p["spec_out"]),
        type_embed=int(p["type_embed"]), head_hidden=tuple(int(h) for h in p["head_hidden"]),
        dropout=float(p["dropout"]), use_spectra=use_spectra,
    )
