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
