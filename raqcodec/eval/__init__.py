"""Measuring raqcodec: image metrics (``metrics``: the one PSNR, SSIM, MS-SSIM), BD-rates (``bdrate``),
reference codecs (``baselines``), the rate-distortion engine behind ``raqcodec rd`` (``rd``), its reports
(``report``) and figures (``plot``).

The names below are what the command line offers; they import nothing.
"""

OURS = "raqcodec"  # how results files and figures name raqcodec among the codecs
BASELINES = ("jpeg", "webp", "avif")  # reference codecs, through Pillow (``baselines``)
METRICS = ("psnr", "ms-ssim")  # quality metrics of a rate-distortion point
