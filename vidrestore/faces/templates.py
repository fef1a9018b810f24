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
