"""What the models need to know about a dataset's labels, without TensorFlow: DatasetInfo and
the class counts of single- and multi-attribute labels.

`num_classes` is a tuple of class counts, one per label attribute, everywhere: (10,) for
MNIST's digit. Labels are (B,) class indices for one attribute and (B, A) for A attributes.
"""

import dataclasses
import itertools

import numpy as np


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the models need to know about the data."""
  num_classes: tuple  # Class counts, one per label attribute: (10,) for one label.
  image_shape: tuple  # (height, width, channels) after preprocessing.
  num_examples: int  # In the training split, over all hosts; 0 if unknown.
  class_names: tuple  # Names of the classes (a tuple of them per attribute with config.labels).


def num_classes_from_json(value) -> tuple:
  """A saved num_classes (an int for one label, a list per attribute) as a tuple of counts."""
  return tuple(int(n) for n in value) if isinstance(value, (tuple, list)) else (int(value),)


def num_classes_to_json(num_classes: tuple):
  """num_classes as checkpoints store it: an int for one label, a list per attribute."""
  return int(num_classes[0]) if len(num_classes) == 1 else [int(n) for n in num_classes]


def default_labels(num_classes: tuple, max_combinations: int = 100) -> np.ndarray:
  """Labels to draw when none are asked for: every class, or (N, A) combinations of attributes.

  Every combination when there are at most `max_combinations`, else each attribute's values
  in turn with the other attributes at 0.
  """
  if len(num_classes) == 1:
    return np.arange(num_classes[0], dtype=np.int32)
  if np.prod(num_classes) <= max_combinations:
    return np.array(list(itertools.product(*map(range, num_classes))), np.int32)
  rows = [[v if i == a else 0 for i in range(len(num_classes))]
          for a, n in enumerate(num_classes) for v in range(n)]
  return np.array(rows, np.int32)


def label_keys(config) -> tuple:
  """The class-label features of config.labels; () for the dataset's own label."""
  return tuple(k.strip() for k in config.get('labels', '').split(',') if k.strip())
