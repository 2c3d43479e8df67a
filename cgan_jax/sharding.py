"""The 1-D `data` mesh, and moving host batches onto it."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of every process) along the `data` axis."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: Mesh, name: str = 'batch_size') -> int:
  """This process's share of a global batch; a clear error if it does not divide evenly."""
  num_devices = mesh.devices.size
  if global_batch_size % num_devices:
    raise ValueError(f'{name}={global_batch_size} is not divisible by the {num_devices} devices; '
                     f'use a multiple of {num_devices}.')
  return global_batch_size // jax.process_count()


def to_global(local_batches, mesh: Mesh, batch_axis: int = 1):
  """Stacks this host's arrays into global arrays sharded along `batch_axis` over `data`."""
  spec = P(*([None] * batch_axis), DATA_AXIS)
  sharding = NamedSharding(mesh, spec)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batches)
