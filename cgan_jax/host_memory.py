"""Host memory: glibc malloc told to keep freed memory, so XLA:CPU reuses its step buffers."""

import ctypes
import importlib.metadata
import importlib.util
import os
import sys

import jax

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
  """Makes glibc reuse freed blocks instead of handing them back to the kernel; True if applied.

  XLA:CPU allocates each step's buffers afresh, mostly from its worker threads. glibc serves
  those from per-thread arenas whose heaps it unmaps once empty (and any block over 64 MB from
  a fresh mmap), so the kernel zero-fills the same memory page by page on every step: 600 MB
  of page faults per step of the tutorial model, whose im2col copies then ran 4x slower than
  memory allows (measured). One arena, no mmap and no trimming keep that memory mapped. The
  one arena costs steps of tiny models, whose threads then contend for it (the digits step ran
  1.4x slower), hence `config.reuse_host_memory`. Call it before JAX runs anything. Skipped
  where JAX computes on an accelerator (there the one arena would only slow the input pipeline's
  threads), off glibc, and where the user tunes malloc through glibc's MALLOC_* variables.
  Also makes XLA:CPU run each computation synchronously, one step's buffers at a time.
  """
  if (not jax_runs_on_cpu() or not sys.platform.startswith('linux') or
      any(k.startswith('MALLOC_') for k in os.environ)):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  except (OSError, AttributeError):  # Not glibc (musl, ...): leave malloc as it is.
    return False
  # Dispatched asynchronously, a step queued behind a running one starts as soon as that one's
  # outputs are ready, before its temporary buffers are freed, and takes a second set beside
  # them, which glibc then keeps (273 MB more at peak for configs/fashion_mnist.py, measured);
  # run synchronously each step frees its buffers before the next asks for them.
  if applied:
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  return applied


def release_freed_memory() -> bool:
  """Hands the free pages of glibc's heaps back to the kernel (malloc_trim); True if any were.

  With keep_freed_memory's settings nothing freed is returned by itself: the compiler's working
  memory stays resident after compilation. Called once compiled, this returns it; the step's
  buffers, reused from then on, are faulted in once more.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    return bool(ctypes.CDLL('libc.so.6').malloc_trim(0))
  except (OSError, AttributeError):  # Not glibc.
    return False


def release_after_compile(config):
  """make_train_loop's `on_compiled` for `config`: with reuse_host_memory glibc keeps all freed
  memory, the compiler's included; handed back before the first step, the steps' buffers do
  not land beside it. None otherwise."""
  return release_freed_memory if config.reuse_host_memory else None


def jax_runs_on_cpu() -> bool:
  """Whether JAX will compute on the CPU, decided without starting a backend.

  The malloc settings only help before JAX runs anything (started first, the step still faulted
  73,000 pages a step instead of 0: measured), so this reads the configured platforms and the
  installed accelerator plugins (CUDA/ROCm PJRT plugins, libtpu) instead of asking JAX.
  """
  if jax.config.jax_platforms:  # JAX_PLATFORMS or --jax_platforms, in order of preference.
    return jax.config.jax_platforms.split(',')[0] == 'cpu'
  return not (importlib.metadata.entry_points(group='jax_plugins') or
              any(importlib.util.find_spec(name) for name in ('jax_plugins', 'libtpu')))
