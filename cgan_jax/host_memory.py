"""Host memory: glibc malloc told to keep freed memory, so XLA:CPU's buffers are reused."""

import ctypes
import os
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
  """Makes glibc reuse freed blocks instead of handing them back to the kernel; True if applied.

  XLA:CPU allocates each step's buffers afresh. By default glibc serves large blocks, and any
  block of a worker thread's arena, with new mmap'd pages that the kernel zero-fills page by
  page on first touch and takes back on free: the tutorial step faulted in 600 MB per step that
  way, and its im2col copies ran 4x slower than memory allows (measured). One arena, no mmap
  and no trimming keep that memory mapped for the next step. Skipped off glibc, and where the
  user tunes malloc through glibc's MALLOC_* environment variables or sets
  CGAN_JAX_SYSTEM_MALLOC=1.
  """
  if not sys.platform.startswith('linux') or os.environ.get('CGAN_JAX_SYSTEM_MALLOC') == '1':
    return False
  if any(name.startswith('MALLOC_') for name in os.environ):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  except (OSError, AttributeError):  # Not glibc (musl, ...): leave malloc as it is.
    return False
