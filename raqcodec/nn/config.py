"""Architecture of a RAQ model: everything needed to rebuild its modules from a checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

CrossForcing = Literal["reference", "paper", "none"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the VQ-VAE and its seq2seq codebook adapter (paper Table 1 defaults, CIFAR size)."""

    channels: int = 128  # C: width of the conv trunk
    res_channels: int = 64  # R: bottleneck width inside a residual block
    res_blocks: int = 2  # residual blocks in the encoder (and the decoder unless decoder_res_blocks is set)
    decoder_res_blocks: int | None = None  # residual blocks in the decoder; None: res_blocks
    latent_dim: int = 64  # d: dimension of a codebook vector
    codebook_size: int = 128  # K: size of the EMA base codebook
    k_min: int = 8  # smallest adapted codebook size K~ the model is trained for
    k_max: int = 1024  # largest adapted codebook size K~ (length of the generated sequence)
    adapter_layers: int = 2  # LSTM layers in the seq2seq encoder and decoder
    adapter_dropout: float = 0.5
    # How the seq2seq decoder is fed: "reference" (authors' code: base vectors on odd steps < 2K,
    # learned embeddings elsewhere), "paper" (previous outputs fed back), "none" (embeddings only).
    cross_forcing: CrossForcing = "reference"
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    commitment: float = 0.25  # beta

    downsampling: int = 4  # fixed by the architecture: one index per 4x4 pixels

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        if self.cross_forcing not in ("reference", "paper", "none"):
            raise ValueError(f"unknown cross_forcing {self.cross_forcing!r}")
        if self.decoder_res_blocks is not None and self.decoder_res_blocks < 0:
            raise ValueError(f"decoder_res_blocks must be >= 0, got {self.decoder_res_blocks}")
        if self.downsampling != 4:
            raise ValueError("only x4 downsampling is implemented")

    @property
    def decoder_blocks(self) -> int:
        return self.res_blocks if self.decoder_res_blocks is None else self.decoder_res_blocks

    def to_dict(self) -> dict[str, Any]:
        # Optional fields left unset are omitted: the dict (and the fingerprints hashed over it) of a model
        # that does not use them stays what it was before they existed.
        return {k: v for k, v in asdict(self).items() if not (k == "decoder_res_blocks" and v is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
