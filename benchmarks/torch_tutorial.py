"""The Keras cDCGAN tutorial's training iteration in PyTorch, eager or torch.compile'd.

The same models as benchmarks/keras_tutorial.py (Embedding -> Linear label map, Conv2d /
ConvTranspose2d, LeakyReLU 0.2, dropout 0.4), Adam(2e-4, 0.5), binary cross-entropy, and the
same iteration: D on a real half-batch, D on a generated half-batch, then G through D on a
full batch (gradients for G's weights only, as Keras' tape takes them). Channels first, as
PyTorch users write it; on a GPU in float32 with TF32 matmuls and convolutions, as JAX's
default precision computes float32 there.
With compile, G and D are torch.compile'd (default mode, one static graph per batch size).
Run alone: python -m benchmarks.torch_tutorial [--steps N] [--compile]; prints one JSON line.
With --serve '{"batch_size": ...}' it times iterations on request, for cgan_jax.benchmark --torch.
PyTorch is not a dependency of cgan_jax: install it to run this.
"""

import json
import resource
import statistics
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


class Discriminator(nn.Module):

  def __init__(self, image_shape, num_classes):
    super().__init__()
    h, w, c = image_shape
    self.h, self.w = h, w
    self.embed = nn.Embedding(num_classes, 50)
    self.label_map = nn.Linear(50, h * w)
    self.conv1 = nn.Conv2d(c + 1, 128, 3, stride=2, padding=1)
    self.conv2 = nn.Conv2d(128, 128, 3, stride=2, padding=1)
    self.dropout = nn.Dropout(0.4)
    self.out = nn.Linear(128 * (-(-h // 4)) * (-(-w // 4)), 1)

  def forward(self, image, label):
    m = self.label_map(self.embed(label)).view(-1, 1, self.h, self.w)
    x = torch.cat([image, m], dim=1)
    x = F.leaky_relu(self.conv1(x), 0.2)
    x = F.leaky_relu(self.conv2(x), 0.2)
    return self.out(self.dropout(x.flatten(1)))  # A logit: BCE-with-logits is Keras' sigmoid + BCE.


class Generator(nn.Module):

  def __init__(self, image_shape, num_classes, latent_dim):
    super().__init__()
    h, w, c = image_shape
    self.h, self.w = h // 4, w // 4
    self.embed = nn.Embedding(num_classes, 50)
    self.label_map = nn.Linear(50, self.h * self.w)
    self.project = nn.Linear(latent_dim, 128 * self.h * self.w)
    self.up1 = nn.ConvTranspose2d(129, 128, 4, stride=2, padding=1)
    self.up2 = nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1)
    self.out = nn.Conv2d(128, c, 7, padding=3)

  def forward(self, z, label):
    m = self.label_map(self.embed(label)).view(-1, 1, self.h, self.w)
    x = F.leaky_relu(self.project(z), 0.2).view(-1, 128, self.h, self.w)
    x = torch.cat([x, m], dim=1)
    x = F.leaky_relu(self.up1(x), 0.2)
    x = F.leaky_relu(self.up2(x), 0.2)
    return torch.tanh(self.out(x))


def device_name() -> str:
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def make_iteration(batch_size, g_batch_size, image_shape, num_classes, latent_dim,
                   compile=False):  # pylint: disable=redefined-builtin
  """Returns run(steps): `steps` tutorial iterations on a fixed synthetic real batch."""
  device = torch.device(device_name())
  torch.set_float32_matmul_precision('high')  # TF32 where the GPU has it (convolutions: already).
  torch.manual_seed(0)
  d = Discriminator(image_shape, num_classes).to(device)
  g = Generator(image_shape, num_classes, latent_dim).to(device)
  d_opt = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
  g_opt = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
  d_call, g_call = d, g
  if compile:
    d_call, g_call = torch.compile(d, dynamic=False), torch.compile(g, dynamic=False)
  h, w, c = image_shape
  images = torch.rand((batch_size, c, h, w), device=device) * 2 - 1
  labels = torch.randint(0, num_classes, (batch_size,), device=device)

  def fake_inputs(n):
    return (torch.randn((n, latent_dim), device=device),
            torch.randint(0, num_classes, (n,), device=device))

  def d_step(x, y, target):
    logits = d_call(x, y)
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
    d_opt.zero_grad(set_to_none=True)
    loss.backward()
    d_opt.step()

  def iteration():
    d_step(images, labels, 1.0)
    z, y = fake_inputs(batch_size)
    with torch.no_grad():
      fakes = g_call(z, y)
    d_step(fakes, y, 0.0)
    z, y = fake_inputs(g_batch_size)
    logits = d_call(g_call(z, y), y)
    loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    g_opt.zero_grad(set_to_none=True)
    loss.backward(inputs=list(g.parameters()))
    g_opt.step()
    return loss

  def run(steps):
    for _ in range(steps):
      loss = iteration()
    return float(loss.detach())  # Waits for the device.
  return run


def peak_host_memory_bytes() -> int:
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return maxrss * (1 if sys.platform == 'darwin' else 1024)


def serve(batch_size, g_batch_size, image_shape, num_classes, latent_dim,
          compile=False):  # pylint: disable=redefined-builtin
  """Times `steps` iterations per line read from stdin; answers each with the seconds taken,
  and with its peak memory as JSON once stdin ends."""
  run = make_iteration(batch_size, g_batch_size, tuple(image_shape), num_classes, latent_dim,
                       compile)
  run(2)  # Compiles (with compile) and warms the allocator.
  print('ready', flush=True)
  for line in sys.stdin:
    t = time.perf_counter()
    run(int(line))
    print(time.perf_counter() - t, flush=True)
  print(json.dumps(memory()), flush=True)


def memory() -> dict:
  result = {'peak_host_memory_bytes': peak_host_memory_bytes()}
  if torch.cuda.is_available():
    result['device_peak_bytes'] = torch.cuda.max_memory_allocated()
  return result


def main():
  if '--serve' in sys.argv:
    serve(**json.loads(sys.argv[sys.argv.index('--serve') + 1]))
    return
  steps = int(sys.argv[sys.argv.index('--steps') + 1]) if '--steps' in sys.argv else 10
  compiled = '--compile' in sys.argv
  run = make_iteration(64, 128, (28, 28, 1), 10, 100, compile=compiled)
  run(2)
  times = []
  for _ in range(5):
    t = time.perf_counter()
    run(steps)
    times.append(time.perf_counter() - t)
  per_sec = steps / statistics.median(times)
  print(json.dumps({'device': device_name(), 'compile': compiled, 'torch': torch.__version__,
                    'iterations_per_sec': per_sec, 'real_images_per_sec': 64 * per_sec,
                    'n_batch_images_per_sec': 128 * per_sec, **memory()}))


if __name__ == '__main__':
  main()
