"""``--devices {default,all}``: data-parallel training with TensorFlow's own engine,
tf.distribute.MirroredStrategy. Build and compile the model under ``strategy.scope()``;
``fit`` then splits each global batch of --batch_size across the replicas, each replica runs
the training step on its share, Keras scales each replica's loss by 1/replicas and the
optimizer sums the gradients across replicas (an all-reduce) before one identical update of
every copy of the weights.

TensorFlow and Keras are imported inside the functions (the flags need only the names). On
the JAX and PyTorch backends there is one device (:class:`OneDevice`); ``all`` is refused.
"""

DEVICES = ("default", "all")

DEVICES_HELP = (
    "default: TensorFlow's default placement on one device (the first GPU if any, else the "
    "CPU); all: data-parallel training with tf.distribute.MirroredStrategy over all visible "
    "GPUs (or over the logical CPU devices when there is no GPU but several are configured): "
    "each batch of --batch_size (a multiple of the number of replicas) is split across the "
    "replicas and their gradients are summed, BatchNorm uses the statistics of the whole "
    "batch, and Co-teaching's keep count and small-loss picks are made per replica on its "
    "share (docs/usage.md). With one visible device, 'all' falls back to 'default'. Choose the "
    "GPUs with CUDA_VISIBLE_DEVICES.")

_STRATEGIES = {}


class OneDevice:
    """The strategy stand-in on the JAX and PyTorch backends: one device (the backend's
    default: the first GPU if any, else the CPU), ``scope()`` changes nothing. Keras
    places the variables and the compiled steps itself; tf.distribute is not involved."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def _backend():
    import keras

    return keras.backend.backend()


def device_strategy(devices="default"):
    """The tf.distribute strategy for ``--devices``.

    Parameters
    ----------
    devices : {"default", "all"}
        "default": TensorFlow's default strategy (its ``scope()`` changes nothing: one device,
        TF's default placement). "all": a ``tf.distribute.MirroredStrategy`` over every visible
        logical GPU or, when there is none, over every logical CPU device (several exist only
        if configured with ``tf.config.set_logical_device_configuration``; useful for tests).
        When that leaves a single device, the default strategy is returned instead (one
        replica, identical to "default"); :func:`describe_strategy` says so.

    Returns
    -------
    tf.distribute.Strategy
        The same object for repeated calls with "all" (one strategy per process). Use
        ``with strategy.scope():`` around building *and* compiling a model (and creating its
        optimizers); ``fit``/``predict`` need no scope. ``strategy.num_replicas_in_sync`` is
        the number of replicas.

    Notes
    -----
    Listing the devices initialises TensorFlow's runtime, after which the logical device
    configuration can no longer change.
    """
    if devices not in DEVICES:
        raise ValueError(f"--devices must be one of {DEVICES}, got {devices!r}")
    if _backend() != "tensorflow":
        if devices == "all":
            raise ValueError(f"--devices all is tf.distribute (TensorFlow only), not "
                             f"available on the {_backend()} backend: use --devices default")
        return OneDevice()
    import tensorflow as tf

    if devices == "default":
        return tf.distribute.get_strategy()
    if devices not in _STRATEGIES:
        names = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        _STRATEGIES[devices] = (tf.distribute.MirroredStrategy(names) if len(names) > 1
                                else tf.distribute.get_strategy())
    return _STRATEGIES[devices]


def strategy_devices(strategy):
    """The devices a strategy's replicas run on (one name per replica); for the default
    strategy, the one device TensorFlow places work on by default (on JAX / PyTorch, the
    backend's first device)."""
    if isinstance(strategy, OneDevice):
        import keras

        return [keras.distribution.list_devices()[0]]
    import tensorflow as tf

    if strategy.num_replicas_in_sync > 1:
        return list(strategy.extended.worker_devices)
    gpus = tf.config.list_logical_devices("GPU")
    return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]


def describe_strategy(strategy):
    """One line saying which devices train, e.g. for the scripts to print with --devices all."""
    names = strategy_devices(strategy)
    if len(names) > 1:
        return (f"--devices all: tf.distribute.MirroredStrategy over {len(names)} replicas "
                f"({', '.join(names)}); each batch is split across them")
    return (f"--devices all: only one device is visible ({names[0]}), so no MirroredStrategy: "
            "training on it with TensorFlow's default placement, as --devices default")


def check_batch_size(batch_size, strategy):
    """Raise ValueError unless ``batch_size`` splits evenly across the strategy's replicas.

    Keras 3's TensorFlow trainer, under tf.distribute, averages the first batch of every
    ``fit``/``evaluate`` call across the replicas to learn the input shapes
    (``_maybe_symbolic_build``), which fails with an obscure "AddN ... must have the same size
    and shape" error when that batch does not split evenly. Later (e.g. last, smaller) batches
    may split unevenly. :class:`coteaching.CoTeaching` skips that step, so its S + C batches may
    have any size.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and batch_size % replicas:
        raise ValueError(
            f"--batch_size {batch_size} does not split evenly across the {replicas} replicas "
            f"of --devices all; use a multiple of {replicas} (or CUDA_VISIBLE_DEVICES to "
            "choose the GPUs)")


def sync_batchnorm(model, strategy):
    """Under a multi-replica ``strategy``, make every BatchNormalization layer of ``model``
    (nested models included) normalise with the statistics of the *global* batch (Keras'
    ``BatchNormalization(synchronized=True)``, an all-reduce per layer and step).

    Why: with per-replica statistics (Keras' default) Keras 3 also keeps the moving
    mean/variance per replica (their variables have aggregation "none"), so the copies drift
    apart, ``get_weights`` returns replica 0's while ``predict`` uses each replica's own, and a
    replica that receives an empty share (a last batch smaller than the number of replicas)
    turns its moving statistics into NaN. With global statistics every replica computes the
    same moments, hence the same moving averages, an empty share is harmless, and a training
    step is the single-device step on the whole batch (up to float rounding).

    Must be called before the first ``fit`` traces the training step. With one replica it
    changes nothing. Returns the number of BatchNormalization layers switched.
    """
    if strategy.num_replicas_in_sync <= 1:
        return 0
    import keras

    count, stack, seen = 0, [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
        stack.extend(getattr(layer, "layers", None) or [])
    return count


def run_strategy(devices="default", *, batch_size, printer=print):
    """``devices``' strategy (:func:`device_strategy`), checked against ``batch_size``; says
    which devices train."""
    strategy = device_strategy(devices)
    if devices == "all":
        printer(describe_strategy(strategy))
    check_batch_size(batch_size, strategy)
    return strategy
