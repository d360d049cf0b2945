"""Measuring raqcodec: image metrics (``metrics``: the one PSNR, SSIM, MS-SSIM), BD-rates (``bdrate``),
reference codecs (``baselines``), the rate-distortion engine behind ``raqcodec rd`` (``rd``), its reports
(``report``) and figures (``plot``).

The names below are what the command line offers; they import nothing.
"""

OURS = "raqcodec"  # how results files and figures name raqcodec among the codecs
BASELINES = ("jpeg", "webp", "avif")  # reference codecs, through Pillow (``baselines``)
# measured unless asked otherwise: WebP beside JPEG, as it is what a raqcodec file competes with (AVIF, slower
# to search and not in every Pillow build, on request)
DEFAULT_BASELINES = ("jpeg", "webp")
METRICS = ("psnr", "ms-ssim")  # quality metrics of a rate-distortion point
