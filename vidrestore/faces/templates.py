"""Alignment templates: where a model's training crops put the 5 landmarks (eyes, nose, mouth corners).

Kept apart from :mod:`vidrestore.faces.alignment` so that the model registry can name a template without
importing OpenCV.
"""

import numpy as np

# facexlib's 5-point FFHQ template for a 512 crop: eyes, nose, mouth corners (image left first).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

# CelebA's aligned crops (img_align_celeba, 178x218) put the 5 points near (69, 111), (108, 111), (88, 136),
# (72, 152), (105, 152) (the dataset's typical aligned landmarks). Face SR models trained on CelebA take the
# central 178x178 square (rows 20..197) resized to 128 (pixel centres: x' = (x + 0.5) * 128 / 178 - 0.5).
CELEBA_TEMPLATE_128 = np.array(
    [
        [49.4775, 65.2978],
        [77.5225, 65.2978],
        [63.1404, 83.2753],
        [51.6348, 94.7809],
        [75.3652, 94.7809],
    ],
    dtype=np.float32,
)
