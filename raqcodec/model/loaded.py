"""A loaded codec model: float encoder, exact integer decoder, and the codebooks of every size.

Codebooks are integer tensors at the decoder's activation scale 2^-F. The seq2seq adapter's codebooks are
prefixes of the frozen sequence; the cluster adapter's are computed on first use and kept per model.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..entropy.context import ContextModel
from ..io.atomic import atomic_path
from ..io.bitstream import ADAPTERS
from ..nn.autoencoder import Decoder, Encoder
from ..nn.cluster import ClusterSettings, cluster_codebook
from ..nn.config import ModelConfig
from ..nn.quantizer import nearest_in_prefixes, nearest_indices
from .exact import ExactDecoder
from .fast_networks import FastNetwork
from .files import CONTEXT_PREFIX, ModelFile, ModelFileError, read_model_file
from .intkmeans import integer_kmeans
from .refine import descent
from .residual import PREFIX as RESIDUAL_PREFIX
from .residual import ResidualStage
from .tiling import REFINE_SHARE, Tile, decoder_radius, encoder_radius, plan_tiles, refine_halo

# Smallest codebook any model codes with. Sizes below a model's trained k_min are served by integer
# k-means of its base-size codebook (exact everywhere), so low budgets stay reachable without retraining.
MIN_CODEBOOK_SIZE = 2


def small_codebook_source(config: ModelConfig) -> int:
    """How many leading vectors of the sequence the sizes below k_min are clustered from: the base size K,
    clamped to the trained range. Those vectors cover the latents far better than the k_min smallest ones
    (measured on raq-photo at K~ = 4: 18.6 vs 17.3 dB on Kodak crops, 18.4 vs 12.9 dB on a portrait)."""
    return min(max(config.codebook_size, config.k_min), config.k_max)


def cache_dir() -> Path:
    """Where computed cluster codebooks are kept: $RAQCODEC_CACHE_DIR, else $XDG_CACHE_HOME/raqcodec."""
    if os.environ.get("RAQCODEC_CACHE_DIR"):
        return Path(os.environ["RAQCODEC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raqcodec"


def codebook_crc(codebook: Tensor) -> int:
    """CRC32 of an integer codebook as little-endian int32 rows: what the stream header carries."""
    return zlib.crc32(codebook.to("cpu", torch.int32).numpy().astype("<i4").tobytes())


class CodecModel:
    def __init__(self, file: ModelFile, path: Path | None = None) -> None:
        cfg, t = file.config, file.tensors
        self.config, self.name, self.path = cfg, file.name, path
        self.fingerprint = file.fingerprint
        self.device = torch.device("cpu")
        try:
            self.encoder = Encoder(cfg)
            self.encoder.load_state_dict(_sub(t, "encoder."))
            self.encoder.eval()
            float_decoder = Decoder(cfg)
            float_decoder.load_state_dict(_sub(t, "decoder."))
            self.act_frac_bits = int(t["frozen.act_frac_bits"])
            weight_bits = {k: int(v) for k, v in _sub(t, "frozen.weight_bits.").items()}
            self.decoder = ExactDecoder(float_decoder, self.act_frac_bits, weight_bits)
            # The float twin is kept for encoder-side refinement only; decoding uses the exact one.
            self.float_decoder = float_decoder.eval().requires_grad_(False)
            # Receptive-field radii in latents: the halos that make tiled evaluation agree with whole-image
            # evaluation (raqcodec.model.tiling).
            self.decoder_halo = decoder_radius(float_decoder)
            self.encoder_halo = encoder_radius(self.encoder, cfg.downsampling)
            self.base_codebook = t["codebook.embedding"].float()
            self.sequence = t["frozen.sequence"].to(torch.int64)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(f"model {self.name} is incomplete or inconsistent ({exc})") from None
        try:  # optional: a model v2 codes what its base image misses in a residual stage (format 3)
            has_residual = any(k.startswith(RESIDUAL_PREFIX) for k in t)
            self.residual = ResidualStage(t) if has_residual else None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"model {self.name}: residual stage is inconsistent ({exc})") from None
        try:  # optional: models without one code their indices with the order-0 coder
            has_context = any(k.startswith(CONTEXT_PREFIX) for k in t)
            self.context = ContextModel(t, self.act_frac_bits) if has_context else None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(f"model {self.name}: {exc}") from None
        if self.sequence.shape != (cfg.k_max, cfg.latent_dim):
            raise ModelFileError(f"model {self.name}: frozen sequence has shape {tuple(self.sequence.shape)}")
        self._cluster_cache: dict[int, Tensor] = {}
        self._small_cache: dict[int, Tensor] = {}
        self._lock = threading.Lock()
        self._twins: dict[torch.device, CodecModel] = {self.device: self}  # ``on``: one per device, shared
        self._fast_networks: dict[str, FastNetwork] = {}  # ``_fast``

    @classmethod
    def load(cls, path: Path) -> CodecModel:
        return cls(read_model_file(path), path)

    @property
    def fingerprint_bytes(self) -> bytes:
        """The 8 bytes of the fingerprint that a stream header carries."""
        return bytes.fromhex(self.fingerprint)[:8]

    @property
    def size_range(self) -> tuple[int, int]:
        """Codebook sizes this model codes with: from MIN_CODEBOOK_SIZE up to its largest trained size."""
        return min(MIN_CODEBOOK_SIZE, self.config.k_min), self.config.k_max

    @property
    def trained_range(self) -> tuple[int, int]:
        """Sizes the adapter was trained for; smaller ones come from integer k-means (``codebook``)."""
        return self.config.k_min, self.config.k_max

    def on(self, device: torch.device | str) -> CodecModel:
        """This model with its networks on ``device``: itself when they are there already, else a twin made
        once per device and kept. A loaded model is shared (``registry.load`` caches it for the process),
        so asking for another device never moves this one under other callers' feet. Twins share the
        codebook caches and the integer tables, which live on the CPU."""
        where = torch.device(device)
        with self._lock:
            twin = self._twins.get(where)
            if twin is None:
                twin = copy.copy(self)
                twin.encoder = copy.deepcopy(self.encoder).to(where)
                twin.decoder = copy.deepcopy(self.decoder).to(where)
                twin.float_decoder = copy.deepcopy(self.float_decoder).to(where)
                twin._fast_networks = {}
                twin.device = where
                self._twins[where] = twin
            return twin

    # -- codebooks -------------------------------------------------------------------------------------
    def codebook(self, adapter: str, size: int) -> Tensor:
        """Integer codebook (size, d), int64, at scale 2^-F."""
        lo, hi = self.size_range
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r} (choose from {', '.join(ADAPTERS)})")
        if not lo <= size <= hi:
            raise ValueError(f"codebook size {size} outside this model's range {lo}..{hi}")
        if adapter == "seq2seq":
            if size >= self.config.k_min:
                return self.sequence[:size]
            with self._lock:
                if size not in self._small_cache:
                    self._small_cache[size] = integer_kmeans(self.sequence[: small_codebook_source(self.config)], size)
                return self._small_cache[size]
        with self._lock:
            if size not in self._cluster_cache:
                self._cluster_cache[size] = self._compute_cluster(size)
            return self._cluster_cache[size]

    def _compute_cluster(self, size: int) -> Tensor:
        """DKM/IKM codebook as integers; inverse DKM takes tens of seconds, so results are cached on disk
        per model, size and settings (a plain int64 .npy file). A damaged cache file makes this machine
        encode and decode with the wrong codebook consistently; elsewhere the header's codebook checksum
        turns it into an error. Delete the cache directory to recompute."""
        settings = ClusterSettings()
        key = hashlib.sha256(repr(sorted(asdict(settings).items())).encode()).hexdigest()[:12]
        path = cache_dir() / self.fingerprint[:16] / f"cluster-{size}-{key}.npy"
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (size, self.config.latent_dim) and cached.dtype == np.int64:
                return torch.from_numpy(cached)
        except (OSError, ValueError):
            pass
        # Single-threaded float64 on the CPU: the decoder must recompute exactly what the encoder used.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            book = cluster_codebook(self.base_codebook, size, settings)
        finally:
            torch.set_num_threads(threads)
        result = torch.round(book * 2.0**self.act_frac_bits).to(torch.int64)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, result.numpy(), allow_pickle=False)
        except OSError:
            pass  # a read-only home is fine: the codebook is just recomputed next time
        return result

    def float_codebook(self, adapter: str, size: int) -> Tensor:
        return self.codebook(adapter, size).to(self.device, torch.float32) * 2.0**-self.act_frac_bits

    # -- coding ----------------------------------------------------------------------------------------
    # Every method that runs a network takes ``max_positions``: the most latent positions (halo included)
    # one evaluation may hold (``raqcodec.model.tiling``). None, or a grid that fits, runs in one piece.
    def _plan(self, grid: tuple[int, int], max_positions: int | None, halo: int) -> list[Tile] | None:
        """Tiles for a grid over the budget, None when it is processed whole."""
        if max_positions is None or grid[0] * grid[1] <= max_positions:
            return None
        return plan_tiles(grid, max_positions, halo)

    def _pixels(self, rgb: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1] on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255.0

    @torch.no_grad()
    def analyse(self, rgb: np.ndarray, max_positions: int | None = None, fast: bool = False) -> Tensor:
        """Padded (H, W, 3) uint8 -> latent rows (h*w, d) float32 on the model's device. ``fast``: in this
        machine's fastest precision (``raqcodec.model.fast_networks``; what an encode uses), else float32."""
        f = self.config.downsampling
        grid = (rgb.shape[0] // f, rgb.shape[1] // f)
        tiles = self._plan(grid, max_positions, self.encoder_halo)
        encoder = self._fast("encoder") if fast else self.encoder
        if tiles is None:
            z = encoder(self._pixels(rgb))[0]
            return z.permute(1, 2, 0).reshape(-1, z.shape[0])
        out = torch.empty(*grid, self.config.latent_dim, device=self.device)
        for t in tiles:  # the tile's pixels, halo included; only its core latents are kept
            z = encoder(self._pixels(rgb[f * t.oy0 : f * t.oy1, f * t.ox0 : f * t.ox1]))[0]
            out[t.core] = z[(slice(None), *t.inner)].permute(1, 2, 0)
        return out.view(-1, self.config.latent_dim)

    @torch.no_grad()
    def indices(self, rows: Tensor, adapter: str, size: int) -> np.ndarray:
        return self.indices_at(rows, adapter, [size])[size]

    @torch.no_grad()
    def indices_at(self, rows: Tensor, adapter: str, sizes: Sequence[int]) -> dict[int, np.ndarray]:
        """Nearest-neighbour indices at each of ``sizes``: the sizes whose codebooks are prefixes of the
        seq2seq sequence (k_min and up) from one product with the largest of them."""
        nested = [s for s in sizes if adapter == "seq2seq" and s >= self.config.k_min]
        out: dict[int, np.ndarray] = {}
        if nested:
            found = nearest_in_prefixes(rows, self.float_codebook(adapter, max(nested)), nested)
            out.update((s, index.cpu().numpy()) for s, index in found.items())
        for size in set(sizes) - set(nested):
            out[size] = nearest_indices(rows, self.float_codebook(adapter, size)).cpu().numpy()
        return out

    def refined_indices(
        self,
        rows: Tensor,
        grid: tuple[int, int],
        rgb: np.ndarray,
        adapter: str,
        size: int,
        steps: int,
        max_positions: int | None = None,
    ) -> np.ndarray:
        """Indices chosen by decoder-aware refinement (``raqcodec.model.refine``); ``rgb`` is the unpadded image.
        The step whose grid decodes closest wins (the first of equals; step 0 is nearest neighbour)."""
        path = list(self.refinement_path(rows, grid, rgb, adapter, size, steps, max_positions))
        return path[int(np.argmin([error for _, error in path]))][0].astype(np.int64)

    def refinement_path(
        self,
        rows: Tensor,
        grid: tuple[int, int],
        rgb: np.ndarray,
        adapter: str,
        size: int,
        steps: int,
        max_positions: int | None = None,
    ) -> Iterator[tuple[np.ndarray, float]]:
        """The steps of the refinement search, 0 (nearest neighbour) to ``steps``: each step's index grid
        (h * w,) int32 and the float decoder's MSE of it against ``rgb`` (the unpadded image). Lazy on
        images within the tile budget (a caller may stop early); larger ones run it tile by tile
        (``_path_in_tiles``) with the same result."""
        h, w = grid
        book = self.float_codebook(adapter, size)
        if max_positions is not None:
            max_positions = max(1, max_positions // REFINE_SHARE)  # autograd: twice the decoder's memory
        tiles = self._plan(grid, max_positions, refine_halo(self.decoder_halo, steps))
        if tiles is not None:
            yield from self._path_in_tiles(rows.view(h, w, -1), rgb, book, steps, tiles)
            return
        latents = rows.reshape(h, w, -1).permute(2, 0, 1)
        target = self._pixels(rgb)[0]
        for idx, error, _ in descent(self.float_decoder, latents, target, book, steps, F.mse_loss):
            yield idx.cpu().numpy().astype(np.int32), float(error)

    @torch.no_grad()
    def decoded_error(
        self, indices: np.ndarray, grid: tuple[int, int], rgb: np.ndarray, adapter: str, size: int
    ) -> float:
        """The float decoder's MSE of an index grid against ``rgb`` (the unpadded image), as the refinement
        path measures its steps (images within the refinement search's size; no tiling)."""
        target = self._pixels(rgb)[0]
        decoded = self._float_decode(indices, grid, adapter, size)[:, : target.shape[1], : target.shape[2]]
        return float(F.mse_loss(decoded, target))

    def _float_decode(self, indices: np.ndarray, grid: tuple[int, int], adapter: str, size: int) -> Tensor:
        """(3, 4h, 4w) floats in about [0, 1]: the float decoder's image of an index grid (untiled)."""
        h, w = grid
        book = self.float_codebook(adapter, size)
        chosen = torch.from_numpy(np.asarray(indices, np.int64).reshape(-1)).to(self.device)
        return self.float_decoder(book[chosen].reshape(h, w, -1).permute(2, 0, 1)[None])[0]

    def _path_in_tiles(
        self, latents: Tensor, rgb: np.ndarray, book: Tensor, steps: int, tiles: list[Tile]
    ) -> list[tuple[np.ndarray, float]]:
        """The whole-image search, tile by tile. Each tile runs every step on core + halo with the loss
        of the whole image restricted to its pixels (same normalisation, so the same gradients); with
        the halo of ``refine_halo`` its core follows the same trajectory as in a whole-image search.
        Every step's core indices and squared error are summed over the tiles."""
        h, w, _ = latents.shape
        candidates = np.empty((steps + 1, h, w), np.int32)
        errors = np.zeros(steps + 1)
        norm = 3 * rgb.shape[0] * rgb.shape[1]

        def loss(decoded: Tensor, target: Tensor) -> Tensor:
            return torch.sum((decoded - target) ** 2) / norm

        for t in tiles:
            target, core = self._tile_target(rgb, t)
            oh, ow = t.oy1 - t.oy0, t.ox1 - t.ox0
            for step, (idx, _, decoded) in enumerate(
                descent(self.float_decoder, latents[t.outer].permute(2, 0, 1), target, book, steps, loss)
            ):
                candidates[step][t.core] = idx.view(oh, ow)[t.inner].cpu().numpy()
                errors[step] += _squared_error(decoded[core], target[core])
        return [(candidates[step].reshape(-1), float(errors[step] / norm)) for step in range(steps + 1)]

    @torch.no_grad()
    def preview(
        self, indices: np.ndarray, grid: tuple[int, int], adapter: str, size: int, max_positions: int | None = None
    ) -> np.ndarray:
        """Index grid -> (4h, 4w, 3) uint8 with the float decoder in the fastest precision this machine
        has (``raqcodec.model.fast_networks``): an encoder-side estimate of what ``synthesize`` gives (float32:
        about 5x faster on a CPU, on Kodak at most one level off in 0.2% of the pixels; bfloat16 where
        native: 7x faster again, within one level), for scoring candidates. Never written: the decoder's
        own pixels come from ``synthesize``. Tiled like it (a whole 8000x6000 preview took 3 GB)."""
        book = self.float_codebook(adapter, size)
        fast = self._fast("decoder")

        def pixels(sub: Tensor) -> Tensor:
            decoded = fast(book[sub].permute(2, 0, 1)[None])[0]
            return (decoded.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)

        return self._decoded_tiles(self._index_grid(indices, grid), max_positions, pixels)

    def _fast(self, which: Literal["encoder", "decoder"]) -> FastNetwork:
        """The encoder (``which`` "encoder") or the float decoder in this machine's fastest precision
        (``raqcodec.model.fast_networks``), made on first use."""
        with self._lock:
            if which not in self._fast_networks:
                network = self.encoder if which == "encoder" else self.float_decoder
                self._fast_networks[which] = FastNetwork(network, self.device)
            return self._fast_networks[which]

    def _tile_target(self, rgb: np.ndarray, t: Tile) -> tuple[Tensor, tuple[slice, slice, slice]]:
        """The real pixels under a tile's outer rectangle as (3, H', W') floats, and where its core lies
        in them (padding pixels beyond the image never count)."""
        f = self.config.downsampling
        target = self._pixels(rgb[f * t.oy0 : f * t.oy1, f * t.ox0 : f * t.ox1])[0]
        iy, ix = t.inner
        return target, (slice(None), slice(f * iy.start, f * iy.stop), slice(f * ix.start, f * ix.stop))

    @torch.no_grad()
    def synthesize(
        self, indices: np.ndarray, codebook: Tensor, grid: tuple[int, int], max_positions: int | None = None
    ) -> np.ndarray:
        """Index grid -> (4h, 4w, 3) uint8 with the exact decoder. Tiled, the pixels are bit-identical:
        integer arithmetic, and a halo of the decoder's receptive-field radius (``raqcodec.model.tiling``)."""
        book = codebook.to(self.device, torch.float64)
        return self._decoded_tiles(self._index_grid(indices, grid), max_positions, lambda sub: self.decoder(book, sub))

    def _index_grid(self, indices: np.ndarray, grid: tuple[int, int]) -> Tensor:
        """Flat indices -> (h, w) int64 on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64)).to(self.device).view(grid)

    def _decoded_tiles(self, idx: Tensor, max_positions: int | None, pixels: Callable[[Tensor], Tensor]) -> np.ndarray:
        """(4h, 4w, 3) uint8 of the index grid ``idx`` from ``pixels(sub-grid)`` ((3, 4h', 4w') uint8), run
        whole or tile by tile with the decoders' halo (their receptive field: the cores are what the whole
        grid gives)."""
        h, w = idx.shape
        tiles = self._plan((h, w), max_positions, self.decoder_halo)
        if tiles is None:
            return pixels(idx).permute(1, 2, 0).cpu().numpy()
        f = self.config.downsampling
        out = np.empty((f * h, f * w, 3), np.uint8)
        for t in tiles:
            tile = pixels(idx[t.outer])
            iy, ix = t.inner
            core = tile[:, f * iy.start : f * iy.stop, f * ix.start : f * ix.stop]
            out[f * t.y0 : f * t.y1, f * t.x0 : f * t.x1] = core.permute(1, 2, 0).cpu().numpy()
        return out


def _squared_error(a: Tensor, b: Tensor) -> float:
    return float(torch.sum((a.double() - b.double()) ** 2))


def _sub(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
