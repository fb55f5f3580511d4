"""What is known about the published datasets: classes, palettes, label values, band names, normalisation.

WHU-OPT-SAR (Li et al. 2022; the authors' `whu_opt_sar.py` and `whu_cat.py`): 4 optical bands (taken as red,
green, blue, near-infrared, the order the dataset paper gives) and 1 SAR band; labels 0, 10, …, 70 on disk (some
copies 0…7), 0 = background (ignored), then farmland, city, village, water, forest, road, others.

Hunan (the DKDFN dataset, `LauraChow/HunanMultimodalDataset`; the authors' `hunan.py` and `hunan_cat.py`):
13 Sentinel-2 bands (B1…B12 with B8A, in band order) and Sentinel-1 VV, VH in dB; 7 classes in the
MambaDiffusion authors' order. The normalisation values are the authors', divided by as given (they look like
variances; see `mdseg.data.normalise`).
"""

from __future__ import annotations

from mdseg.data.classes import ClassScheme, scheme
from mdseg.data.normalise import Normalisation

WHU_CLASSES = ("farmland", "city", "village", "water", "forest", "road", "others")
WHU_PALETTE = ((139, 69, 19), (255, 0, 0), (255, 255, 0), (0, 0, 255), (0, 255, 0), (0, 255, 255), (205, 96, 144))
WHU_OPT_BANDS = ("red", "green", "blue", "nir")
WHU_SAR_BANDS = ("sar",)
WHU_NORMALISATION = Normalisation(
    opt_mean=(104.74, 96.77, 79.21, 100.92),
    opt_std=(171.04, 217.80, 305.58, 697.17),
    sar_mean=(54.12,),
    sar_std=(2169.97,),
)
# Both encodings in one map: 10·(k+1) as distributed and k+1 as some copies store it; 0 (background) is ignored.
WHU_SCHEME: ClassScheme = scheme(
    WHU_CLASSES, WHU_PALETTE, {**{10 * (k + 1): k for k in range(7)}, **{k + 1: k for k in range(7)}}
)

HUNAN_CLASSES = ("cropland", "forest", "grassland", "wetland", "unused land", "water", "built-up")
HUNAN_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
)
HUNAN_OPT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
HUNAN_SAR_BANDS = ("VV", "VH")
_HUNAN_MEAN = (
    1400.32, 1117.23, 994.44, 787.33, 1016.67, 1754.84, 2082.32, 1973.73, 2264.01, 502.14, 6.38, 1482.67, 818.22,
    -10.33, -16.48,
)  # fmt: skip
_HUNAN_STD = (
    9664.63, 14092.01, 20028.46, 48678.92, 44938.45, 184570.05, 316813.94, 320642.53, 436656.31, 16580.50, 11.98,
    250519.375, 136984.2, 20.4, 18.79,
)  # fmt: skip
HUNAN_NORMALISATION = Normalisation(
    opt_mean=_HUNAN_MEAN[:13], opt_std=_HUNAN_STD[:13], sar_mean=_HUNAN_MEAN[13:], sar_std=_HUNAN_STD[13:]
)
# The authors' stacked labels (`lbl/`): 0 ignored, k+1 → class k ("reduce_zero_label").
HUNAN_STACKED_SCHEME: ClassScheme = scheme(HUNAN_CLASSES, HUNAN_PALETTE, {k + 1: k for k in range(7)})

# The dataset as distributed (`lc_*.tif`): its README maps the stored codes with
# igbp2hunan = [255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255] (255 first replaced by 12) and numbers the result
# 0 cropland, 1 forest, 2 grassland, 3 wetland, 4 water, 5 unused land, 6 built-up. Assumptions: those classes
# are the authors' seven (named alike; unused land and water swap places in their order), and code 11, which
# the table sends to an undocumented 7th value, is ignored rather than guessed.
_README_TO_AUTHORS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 5, 5: 4, 6: 6}
_IGBP_TO_README = {1: 0, 2: 1, 3: 2, 4: 1, 5: 3, 6: 4, 7: 6, 8: 6, 9: 5, 10: 6}
HUNAN_RAW_SCHEME: ClassScheme = scheme(
    HUNAN_CLASSES, HUNAN_PALETTE, {code: _README_TO_AUTHORS[cls] for code, cls in _IGBP_TO_README.items()}
)
