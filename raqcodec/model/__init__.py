"""A loaded model and what coding needs of it: the model file (``files``), finding models (``registry``),
the loaded model with its codebooks of every size (``loaded``), the fixed-point decoder (``exact``),
integer k-means for the smallest codebooks (``intkmeans``), decoder-aware index refinement (``refine``),
tiled evaluation (``tiling``) and model v2's residual stage (``residual``).

The package itself imports nothing, so ``registry`` and ``tiling`` answer without loading torch.
"""
