"""Image folders as datasets: PATH/<split>/<label>/*.png or PATH/<label>/*.png (no TensorFlow)."""

FOLDER_PREFIX = 'folder:'  # config.dataset='folder:PATH' reads the image folder PATH.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')  # What tfds.ImageFolder reads.
