"""Several categorical attributes at once (config.labels): data, training and sampling."""

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from cgan_jax import checkpoint
from cgan_jax import inspect as cgan_inspect
from cgan_jax import input_pipeline
from cgan_jax import labels as labels_lib
from cgan_jax import models
from cgan_jax import sample
from cgan_jax import train
from tests import conftest

# smallnorb has four ClassLabel features; mock_data makes random examples of them offline.
ATTRIBUTES = 'label_category,label_lighting'
COUNTS = (5, 6)


@pytest.fixture
def norb_config(tiny_config):
  tiny_config.dataset = 'smallnorb'
  tiny_config.labels = ATTRIBUTES
  tiny_config.image_size = 8
  tiny_config.num_train_steps = 2
  return tiny_config


def test_batches_carry_one_value_per_attribute(norb_config):
  with tfds.testing.mock_data(num_examples=32):
    ds, info = input_pipeline.create_dataset(norb_config, 'train', 16)
    labels = next(ds.as_numpy_iterator())['label']
  assert info.num_classes == COUNTS and len(info.class_names) == 2
  assert labels.shape == (16, 2) and labels.dtype == np.int32
  assert (labels >= 0).all() and (labels < np.array(COUNTS)).all()


def test_unknown_or_impossible_attributes_are_clear_errors(norb_config):
  norb_config.labels = 'label_category,colour'
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(ValueError, match=r"no class label 'colour'.*label_azimuth"):
      input_pipeline.get_info(norb_config)
  digits = conftest.make_tiny_config()
  digits.labels = 'label,style'
  with pytest.raises(ValueError, match="'digits' has one class label"):
    input_pipeline.get_info(digits)


def test_default_labels_cover_the_combinations():
  np.testing.assert_array_equal(input_pipeline.default_labels((3,)), [0, 1, 2])
  assert input_pipeline.default_labels((2, 3)).tolist() == [[0, 0], [0, 1], [0, 2],
                                                            [1, 0], [1, 1], [1, 2]]
  # Too many combinations: each attribute's values in turn, the others at 0.
  assert input_pipeline.default_labels((20, 9)).shape == (29, 2)


def test_num_classes_is_a_tuple_and_checkpoints_keep_their_json_form(norb_config):
  # One label is (n,) like several; checkpoints store an int for one label (as always) and a
  # list for several, so checkpoints of either form read back as the same tuple.
  single = conftest.make_tiny_config()
  assert input_pipeline.get_info(single).num_classes == (10,)
  norb_config.labels = 'label_category'
  with tfds.testing.mock_data(num_examples=8):
    assert input_pipeline.get_info(norb_config).num_classes == (5,)
  assert labels_lib.num_classes_to_json((10,)) == 10 and labels_lib.num_classes_to_json(COUNTS) == [5, 6]
  assert labels_lib.num_classes_from_json(10) == (10,) and labels_lib.num_classes_from_json([5, 6]) == COUNTS
  for wrong in (10, [10], (), (0,)):
    with pytest.raises(ValueError, match=r'give a tuple of class counts.*e\.g\. \(10,\)'):
      models.create_models(single, wrong, (8, 8, 1))


def test_parse_and_check_labels():
  np.testing.assert_array_equal(sample.parse_labels('3,7'), [3, 7])
  np.testing.assert_array_equal(sample.parse_labels('3:1,4:0'), [[3, 1], [4, 0]])
  for text in ('3:1,4', 'a,b'):
    with pytest.raises(ValueError, match='--labels'):
      sample.parse_labels(text)
  names = ('T-shirt/top', 'Trouser', 'Sandal', 'Ankle boot', 'blue_boat')
  np.testing.assert_array_equal(sample.parse_labels('sandal, 0', names), [2, 0])
  np.testing.assert_array_equal(sample.parse_labels('ankle_boot,Ankle Boot,blue boat', names), [3, 3, 4])
  np.testing.assert_array_equal(sample.parse_labels('T-SHIRT/TOP,1', names), [0, 1])
  np.testing.assert_array_equal(sample.parse_labels('Sandal:odd', [names, ('even', 'odd')]), [[2, 1]])
  # Numeric folder names sort as strings: a value that is a name means that class, else an id.
  numeric = ('1', '10', '11', '2', '3')
  np.testing.assert_array_equal(sample.parse_labels('2,10,0', numeric), [3, 1, 0])
  with pytest.raises(ValueError, match=r"class names \['T-shirt/top', 'Trouser', 'Sandal', .*'boot'"):
    sample.parse_labels('Sandal,boot', names)
  with pytest.raises(ValueError, match=r"got 'boot'\.$"):  # Not "got 'boot' in 'boot'".
    sample.parse_labels('boot', names)
  # Names that differ only in case or '_': the exact one, or an error naming them.
  close = ('Cat', 'a b', 'a_b', 'cat')
  np.testing.assert_array_equal(sample.parse_labels('Cat,cat,a b,a_b', close), [0, 3, 1, 2])
  with pytest.raises(ValueError, match=r"value 'CAT' matches the classes \['Cat', 'cat'\]; write"):
    sample.parse_labels('CAT', close)
  with pytest.raises(ValueError, match=r"2 label attribute\(s\).*joined by ':' \(got 1\)"):
    sample.check_labels([3, 4], COUNTS)
  with pytest.raises(ValueError, match=r'1 label attribute\(s\).*\(got 2\)'):
    sample.check_labels([[3, 1]], (10,))
  with pytest.raises(ValueError, match='Label 6 of attribute 1 is out of range.*0..5'):
    sample.check_labels([[3, 6]], COUNTS)


def test_train_and_sample_two_attributes(norb_config, tmp_path):
  with tfds.testing.mock_data(num_examples=32):
    train.train_and_evaluate(norb_config, str(tmp_path))
  with Image.open(tmp_path / 'samples.png') as grid:  # 30 columns, one per combination.
    assert grid.width == 30 * (32 + 2) + 2
  out = tmp_path / 's.npz'
  sample.sample_to_file(str(tmp_path), str(out), num_per_class=2, labels=sample.parse_labels('1:2,4:0'),
                        per_class_dir=str(tmp_path / 'per_class'))
  data = np.load(out)
  assert data['x'].shape == (4, 8, 8, 1)
  np.testing.assert_array_equal(data['y'], [[1, 2], [4, 0], [1, 2], [4, 0]])
  # The two attributes change the picture from the same noise.
  params, config, dataset, _ = checkpoint.restore_generator(str(tmp_path))
  x, _ = sample.class_samples(sample.build_generator(config, dataset), params,
                              [[1, 2], [1, 3], [2, 2]], 1, 0, config.model.latent_dim, COUNTS)
  assert np.abs(x[0].astype(int) - x[1]).max() > 0 and np.abs(x[0].astype(int) - x[2]).max() > 0
  assert len(list((tmp_path / 'per_class').iterdir())) == 2
  with pytest.raises(ValueError, match='takes 2 label attribute'):
    sample.sample_to_file(str(tmp_path), str(out), labels=sample.parse_labels('3'))
  # The pictures of `inspect` sweep the first attribute.
  result = cgan_inspect.inspect_workdir(str(tmp_path), num_per_class=3, num_steps=3,
                                        log=lambda *_: None)
  assert result['pca_input']['labels'].tolist() == np.repeat(np.arange(5), 3).tolist()
  assert result['interpolation'].shape == (5 * 3, 8, 8, 1)
