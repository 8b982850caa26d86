"""What the two-network training steps (coteaching.CoTeaching, paired.PairedNetworks) share on
the JAX and PyTorch backends: the small-loss picks as a mask in ``keras.ops``, and the
bookkeeping of a stateless JAX step that holds two networks with two optimizers.

Keras' JAX trainer calls ``train_step(state, data)`` with ``state = (trainable_variables,
non_trainable_variables, optimizer_variables, metrics_variables)`` of the whole model, the
optimizer's taken from ``model.optimizer.variables`` (keras/src/backend/jax/trainer.py). A
model with two optimizers sets ``model.optimizer`` to an :class:`OptimizerPair` (both
optimizers' variables, in order) and splits the lists per network with :class:`Positions`.

Nothing here imports a backend at module level.
"""

import keras


def small_loss_mask(loss, keep):
    """(b,) bool: True for the ``keep`` smallest entries of ``loss``, ties to the lower index.

    The same set as ``tf.math.top_k(-loss, keep)`` (which puts the lower index first among
    equal values), but with a data-dependent ``keep`` in a traced step: the rank of sample i
    is ``#{j: loss_j < loss_i} + #{j < i: loss_j == loss_i}`` (a b x b comparison, cheap for
    a batch), and it is picked when its rank is below ``keep``.

    Parameters
    ----------
    loss : (b,) float
        Per-sample losses (gradient-free: the picks are constants).
    keep : int scalar tensor
        How many to pick, in [0, b].
    """
    ops = keras.ops
    b = ops.shape(loss)[0]
    idx = ops.arange(b)
    li, lj = ops.expand_dims(loss, 1), ops.expand_dims(loss, 0)
    before = ops.logical_or(ops.less(lj, li), ops.logical_and(
        ops.equal(lj, li), ops.less(ops.expand_dims(idx, 0), ops.expand_dims(idx, 1))))
    rank = ops.sum(ops.cast(before, "int32"), axis=1)
    return ops.less(rank, ops.cast(keep, "int32"))


class OptimizerPair:
    """``model.optimizer`` on JAX for a model with two optimizers: what the JAX trainer
    reads of it (``variables``, ``built``). ``variables`` are ``first``'s then ``second``'s."""

    built = True

    def __init__(self, first, second):
        self.first, self.second = first, second

    @property
    def variables(self):
        return list(self.first.variables) + list(self.second.variables)


def check_two_networks(net1, net2):
    """ValueError unless ``net1`` and ``net2`` are two networks sharing no variable."""
    if net1 is net2:
        raise ValueError("net1 and net2 must be two different networks")
    if {id(v) for v in net1.weights} & {id(v) for v in net2.weights}:
        raise ValueError("net1 and net2 must not share variables")


def set_optimizer_pair(model, optimizer1, optimizer2, nets):
    """Give a two-network ``model`` its two optimizers (two instances): under
    ``mixed_float16`` each wrapped in a ``LossScaleOptimizer`` as ``keras.Model.compile``
    does, each built on its network's trainable variables (so a checkpoint can be restored
    before training), set as ``model.optimizer1`` / ``optimizer2``; on JAX
    ``model.optimizer`` is their :class:`OptimizerPair` (the trainer's state)."""
    opts = [keras.optimizers.get(optimizer1), keras.optimizers.get(optimizer2)]
    if opts[0] is opts[1]:
        raise ValueError("optimizer1 and optimizer2 must be two different instances")
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        opts = [o if isinstance(o, keras.optimizers.LossScaleOptimizer)
                else keras.optimizers.LossScaleOptimizer(o) for o in opts]
    for opt, net in zip(opts, nets):
        opt.build(net.trainable_variables)
    model.optimizer1, model.optimizer2 = opts
    if keras.backend.backend() == "jax":
        # Keras' JAX trainer carries `model.optimizer.variables` as the step's state.
        model.optimizer = OptimizerPair(*opts)


class Positions:
    """Indices of each network's variables in a model's ``trainable_variables`` (``t1``,
    ``t2``) and ``non_trainable_variables`` (``nt1``, ``nt2``), and of an extra
    non-trainable variable ``table`` (or None)."""

    def __init__(self, model, nets, *, table=None):
        tpos = {id(v): i for i, v in enumerate(model.trainable_variables)}
        npos = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        self.t1, self.t2 = ([tpos[id(v)] for v in net.trainable_variables] for net in nets)
        self.nt1, self.nt2 = ([npos[id(v)] for v in net.non_trainable_variables]
                              for net in nets)
        self.table = None if table is None else npos[id(table)]

    @staticmethod
    def take(values, idx):
        return [values[i] for i in idx]


def merge(values, *parts):
    """``values`` (a list) with ``values[idx[k]] = new[k]`` for each ``(idx, new)``."""
    out = list(values)
    for idx, new in parts:
        for i, v in zip(idx, new):
            out[i] = v
    return out


def stateless_metrics(model, metrics_values, fn, *, variables=None):
    """Run ``fn()`` (stateful code that updates ``model``'s metrics and returns logs) on the
    given metric values, statelessly (JAX); returns ``(logs, new metric values)``.

    ``variables``: ``(trainable values, non-trainable values)`` to map too, when ``fn``
    calls the networks.
    """
    mapping = list(zip(model.metrics_variables, metrics_values))
    if variables is not None:
        mapping += list(zip(model.trainable_variables, variables[0]))
        mapping += list(zip(model.non_trainable_variables, variables[1]))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = fn()
    new = []
    for ref, old in zip(model.metrics_variables, metrics_values):
        value = scope.get_current_value(ref)
        new.append(old if value is None else value)
    return logs, new


def dispatch_train_step(model, *args):
    """``model``'s training step for the backend Keras runs on: Keras' trainer calls
    ``train_step(data)`` on TensorFlow and PyTorch, ``train_step(state, data)`` returning
    ``(logs, state)`` on JAX; ``model`` has ``_tf_train_step``, ``_jax_train_step`` and
    ``_torch_train_step``."""
    backend = keras.backend.backend()
    if backend == "jax":
        return model._jax_train_step(*args)
    if backend == "torch":
        return model._torch_train_step(*args)
    return model._tf_train_step(*args)
