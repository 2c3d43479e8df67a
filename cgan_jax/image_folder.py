"""Image folders as datasets: PATH/<split>/<label>/*.png (tfds.ImageFolder's layout) or
PATH/<label>/*.png (torchvision's and Keras'), checked and laid out without TensorFlow."""

import atexit
import collections
import os
import shutil
import tempfile
from typing import NamedTuple

from absl import logging

FOLDER_PREFIX = 'folder:'  # config.dataset='folder:PATH' reads the image folder PATH.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')  # What tfds.ImageFolder reads.
UNREAD_EXTENSIONS = ('.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm')  # Reported.
_HIDDEN_FOLDERS = ('.', '__MACOSX')  # Folder-name prefixes of Jupyter's and macOS's extras.


class Layout(NamedTuple):
  """An image folder as tfds.ImageFolder reads it."""
  path: str  # The folder, absolute.
  root: str  # What tfds.ImageFolder reads: `path`, or a view of it (linked, not copied).
  files: list  # The image files read, of every split.


def layout(path: str, train_split: str = 'train') -> Layout:
  """Checks the image folder `path` (one-line errors, warnings of skipped files and of classes
  the held-out splits lack) and lays it out for tfds.ImageFolder.

  Every class needs images in `train_split`'s folder: an empty class folder is an error in
  either layout, and so is a class that only other splits hold.
  """
  if not path.strip():
    raise ValueError("config.dataset='folder:' names no folder; give --config.dataset=folder:PATH "
                     'with PATH/<split>/<label>/*.png or PATH/<label>/*.png.')
  if not os.path.isdir(path):
    problem = 'is a file, not a folder (extract an archive first)' if os.path.isfile(path) else (
        'does not exist')
    raise ValueError(f'Image folder {path!r} {problem}; expected PATH/<split>/<label>/*.png '
                     'or PATH/<label>/*.png.')
  path = os.path.abspath(path)
  splits = _folder_splits(path)
  class_files = {split: {label: _image_files(os.path.join(split_path, label))
                         for label in _subfolders(split_path)}
                 for split, split_path in splits.items()}
  files = [f for labels in class_files.values() for fs in labels.values() for f in fs]
  counts = collections.Counter(os.path.splitext(f)[1].lower() for f in files)
  unread = sorted((ext, n) for ext, n in counts.items() if ext in UNREAD_EXTENSIONS)
  if unread:
    found = ', '.join(f'{n} {ext}' for ext, n in unread)
    if not any(counts[ext] for ext in IMAGE_EXTENSIONS):
      raise ValueError(f'Image folder {path!r} has {found} files and no PNG or JPEG ones, the '
                       'formats tfds.ImageFolder reads; convert them (e.g. with PIL).')
    logging.log_first_n(logging.WARNING, 'Image folder %r: skipping %s files; tfds.ImageFolder '
                        'reads only PNG and JPEG.', 1, path, found)
  images = {split: {label: [f for f in fs if f.lower().endswith(IMAGE_EXTENSIONS)]
                    for label, fs in labels.items()} for split, labels in class_files.items()}
  _check_classes_have_images(path, images, splits, _split_names(train_split))
  # tfds.ImageFolder reads the images directly in each class folder: subfolders of a class
  # (as torchvision and Keras read them), hidden folders and a flat layout need a view.
  nested = any(os.path.dirname(f) != os.path.join(splits[split], label)
               for split, labels in images.items() for label, fs in labels.items() for f in fs)
  flat = splits == {'train': path}
  view = flat or nested or any(_subfolders(d, hidden=True) != _subfolders(d)
                               for d in [path, *splits.values()])
  root = _folder_view(images if nested else splits) if view else path
  return Layout(path, root, [f for labels in images.values() for fs in labels.values() for f in fs])


def _subfolders(path, hidden: bool = False) -> list:
  """Names of the folders in `path`, hidden ones ('.ipynb_checkpoints', '__MACOSX') if `hidden`."""
  return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and (
      hidden or not d.startswith(_HIDDEN_FOLDERS)))


def _folder_splits(path) -> dict:
  """{split: its folder} of the image folder `path`: PATH/<split>/<label>/ (tfds.ImageFolder's
  layout), or {'train': PATH} for PATH/<label>/ (torchvision's and Keras')."""
  if _has_images(path):
    raise ValueError(f'Image folder {path!r} has images directly in it; a conditional GAN needs '
                     'one subfolder per class: PATH/<label>/*.png.')
  subdirs = _subfolders(path)
  classes = [d for d in subdirs if _has_images(os.path.join(path, d))]
  if not classes:
    return {d: os.path.join(path, d) for d in subdirs}
  others = sorted(set(subdirs) - set(classes))
  if others and _subfolders(os.path.join(path, others[0])):
    raise ValueError(f'Image folder {path!r} mixes class folders with images ({classes[0]!r}) and '
                     f'folders without ({others[0]!r}); use either PATH/<split>/<label>/*.png or '
                     'PATH/<label>/*.png.')
  if others:
    unread = [f for f in _image_files(os.path.join(path, others[0]))
              if f.lower().endswith(UNREAD_EXTENSIONS)]
    held = (f'only {len(unread)} files tfds.ImageFolder cannot read ({os.path.splitext(unread[0])[1]}'
            ': convert them to PNG)') if unread else 'no PNG or JPEG images'
    raise ValueError(f'Image folder {path!r}: class folder {others[0]!r} has {held}; add images '
                     'or remove the folder.')
  return {'train': path}


def _has_images(folder) -> bool:
  return any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(folder))


def _split_names(split: str) -> set:
  """The split names in a TFDS split expression: 'train[:90%]+test' -> {'train', 'test'}."""
  return {part.split('[')[0].strip() for part in split.split('+')}


_WARNED = set()  # (folder, split) pairs already warned of: the folder is checked once per use.


def _check_classes_have_images(path, images: dict, splits: dict, train_splits: set):
  """A one-line error for an empty class folder, or a class the `train_splits` have no images of;
  a warning (once) of classes another split lacks."""
  classes = sorted({label for labels in images.values() for label in labels})
  # A split without any image is named where it is read ('no images in split ...').
  images = {split: labels for split, labels in images.items() if any(labels.values())}
  for split, labels in images.items():
    empty = [label for label, files in labels.items() if not files]
    if empty:
      folder = os.path.relpath(os.path.join(splits[split], empty[0]), path)
      raise ValueError(f'Image folder {path!r}: class folder {folder!r} has no PNG or JPEG '
                       'images; add images or remove the folder.')
  training = [split for split in images if split in train_splits]
  trained = {label for split in training for label, files in images[split].items() if files}
  untrained = [label for label in classes if label not in trained]
  if training and untrained:
    raise ValueError(f'Image folder {path!r}: split {" + ".join(map(repr, training))} has no '
                     f'class folder {", ".join(map(repr, untrained))}, which other splits have; '
                     'every class needs training images: add them or remove the class from the '
                     'other splits.')
  for split, labels in images.items():
    lacking = [label for label in classes if not labels.get(label)]
    if lacking and split not in train_splits and (path, split) not in _WARNED:
      _WARNED.add((path, split))
      logging.warning('Image folder %r: split %r has no images of class %s; that class is not '
                      'evaluated there.', path, split, ', '.join(map(repr, lacking)))


def _folder_view(splits: dict) -> str:
  """A folder laid out as tfds.ImageFolder reads it, ROOT/<split>/<class>, without hidden folders.

  `splits` is {split: its folder}, whose class folders are linked, or {split: {class: [image
  files]}} (files in subfolders of a class), whose files are linked one by one.
  """
  root = tempfile.mkdtemp(prefix='cgan_jax_image_folder_')
  atexit.register(shutil.rmtree, root, ignore_errors=True)  # Removes the links, not their targets.
  for split, classes in splits.items():
    os.mkdir(os.path.join(root, split))
    if isinstance(classes, str):
      for label in _subfolders(classes):
        os.symlink(os.path.join(classes, label), os.path.join(root, split, label),
                   target_is_directory=True)
      continue
    for label, files in classes.items():
      os.mkdir(os.path.join(root, split, label))
      for i, f in enumerate(files):  # Numbered: files of different subfolders may share a name.
        os.symlink(f, os.path.join(root, split, label, f'{i:07d}_{os.path.basename(f)}'))
  return root


def _image_files(folder, extensions=IMAGE_EXTENSIONS + UNREAD_EXTENSIONS) -> list:
  """The image files under `folder`, in its subfolders too but not hidden ones, sorted."""
  return [os.path.join(root, f) for root, names in _image_files_by_folder(folder, extensions)
          for f in names]


def _image_files_by_folder(path, extensions=IMAGE_EXTENSIONS):
  """(folder, its image files' names) for every folder under `path` but hidden ones, sorted;
  linked folders are followed (each real folder once)."""
  seen = set()
  for root, folders, files in os.walk(path, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:  # A link back up the tree.
      folders[:] = []
      continue
    seen.add(real)
    folders[:] = sorted(d for d in folders if not d.startswith(_HIDDEN_FOLDERS))
    yield root, sorted(f for f in files if f.lower().endswith(extensions))


def image_shape_from_headers(path, files, limit: int = 50_000):
  """(H, W, C) of the image folder `path`'s `files` from their headers (an even spread of `limit`
  of them in larger trees: each header is a file to open); C is 1 if all are grayscale, else 3.

  H and W are None when the sizes differ (then config.image_size must be set).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not files:
    raise ValueError(f'No images found under {path!r}; expected PATH/<split>/<label>/*.png or '
                     'PATH/<label>/*.png.')
  shapes = set()
  stride = -(-len(files) // limit)  # Rounded up: at most `limit` files.
  for file in files[::stride]:
    try:
      with Image.open(file) as im:  # Reads the header only.
        shapes.add((im.height, im.width, 1 if im.mode in ('L', 'LA', '1', 'I', 'I;16') else 3))
    except OSError:  # Named when a split that holds it is read (numpy_batches).
      continue
  if not shapes:
    raise ValueError(f'No image under {path!r} can be read (damaged, or not PNG or JPEG inside); '
                     'fix or remove them.')
  sizes = {shape[:2] for shape in shapes}
  height, width = sizes.pop() if len(sizes) == 1 else (None, None)
  return (height, width, max(shape[2] for shape in shapes))


def first_unreadable_message(path: str):
  """'FILE is not a readable image (...); fix or remove it.' for the first image under `path`
  that PIL cannot read or decode to the end (a JPEG cut short keeps a readable header), else
  None (a scan made only after a failure)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for root, files in _image_files_by_folder(path):
    for f in files:
      try:
        with Image.open(os.path.join(root, f)) as im:
          im.verify()  # Checksums (PNG), which decoding alone skips.
        with Image.open(os.path.join(root, f)) as im:
          im.load()
      except Exception as e:  # pylint: disable=broad-except
        reason = ' '.join(str(e).split())
        reason = reason if len(reason) <= 100 else reason[:100].rsplit(' ', 1)[0] + ' ...'
        return (f'{os.path.join(root, f)} is not a readable image ({type(e).__name__}: '
                f'{reason}); fix or remove it.')
  return None
