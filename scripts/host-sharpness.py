"""How the screening model's host and lesion images differ before any model sees them: each at the
model's 1 um/px (lesion images as planted, at twice their magnification), over its tissue pixels
(grey level under 210): the mean optical density per channel and the sharpness, the standard
deviation of the grey-level Laplacian. Needs numpy, Pillow and openslide-python (the virtualenv
`scripts/bench-peers` makes). Usage: host-sharpness.py FIXTURES"""
import sys

import numpy as np
import openslide
from PIL import Image

fixtures = sys.argv[1]


def at_model_scale(image, microns_per_pixel):
    w, h = image.size
    scale = microns_per_pixel / 1.0
    size = (round(w * scale), round(h * scale))
    return np.asarray(image.convert("RGB").resize(size, Image.LANCZOS)).astype(np.float32)


def laplacian(grey):
    out = np.zeros_like(grey)
    out[1:-1, 1:-1] = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
                       - 4 * grey[1:-1, 1:-1])
    return out


slide = openslide.OpenSlide(f"{fixtures}/cmu_small_region.svs")
images = {"cmu_small_region.svs (host)": at_model_scale(
    slide.read_region((0, 0), 0, slide.dimensions), 0.499)}
for name, mpp in [("hgsc_stromal_he.jpg", 0.5), ("template1.png", 1.0), ("template2.png", 1.0),
                  ("template3.png", 1.0), ("template4.png", 1.0)]:
    images[f"{name} (host)"] = at_model_scale(Image.open(f"{fixtures}/tissue/{name}"), mpp)
for name in ["target_image.png", "histo.jpg", "hgsc_nest.jpg"]:
    # 0.5 um/px shown at 1 um/px: the pixels as they are.
    images[f"{name} (lesion)"] = at_model_scale(Image.open(f"{fixtures}/tissue/{name}"), 1.0)
print(f"{'image':32} {'tissue':>6}  {'optical density R G B':>22}  {'sharpness':>9}")
for name, pixels in images.items():
    grey = pixels.mean(axis=2)
    tissue = grey < 210
    density = (-np.log(np.clip(pixels, 1, 255) / 255))[tissue].mean(axis=0)
    sharpness = laplacian(grey)[tissue].std()
    print(f"{name:32} {tissue.mean():6.2f}  {np.array2string(density, precision=2):>22}  {sharpness:9.1f}")
