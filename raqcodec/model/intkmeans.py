"""Lloyd's k-means in exact integer arithmetic: the same centroids on every machine.

Serves codebook sizes below a model's trained range (``CodecModel.codebook``): they are the k-means
clustering of its base-size codebook. Because the decoder recomputes them, nothing here may depend
on floating point: distances are int64 sums of squares, centroids are floor means of their members.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_ITERATIONS = 100


def integer_kmeans(points: Tensor, size: int) -> Tensor:
    """``size`` integer centroids (size, d) int64 of integer ``points`` (n, d), n >= size >= 1.

    Centroids start at the first ``size`` points; each point joins its nearest centroid (ties to the
    lower index); a centroid becomes the floor mean of its members, and an empty one stays where it is.
    Stops when assignments no longer change (or after MAX_ITERATIONS). |coordinates| must be below 2^26
    so that squared distances stay exact in int64 for d up to 2^10.
    """
    points = points.to("cpu", torch.int64)
    n, d = points.shape
    if not 1 <= size <= n:
        raise ValueError(f"k-means needs 1 <= size <= {n}, got {size}")
    if int(points.abs().max()) >= 2**26 or d > 2**10:
        raise ValueError("integer k-means: coordinates or dimension too large for exact int64 distances")
    centroids = points[:size].clone()
    assignment = torch.full((n,), -1, dtype=torch.int64)
    for _ in range(MAX_ITERATIONS):
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)  # (n, size), exact
        nearest = distances.argmin(1)  # first minimum: ties go to the lower index
        if torch.equal(nearest, assignment):
            break
        assignment = nearest
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=size)
        filled = counts > 0
        centroids[filled] = torch.div(sums[filled], counts[filled, None], rounding_mode="floor")
    return centroids
