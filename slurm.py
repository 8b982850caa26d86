"""Submit a grid of runs to SLURM as one job array: ``python slurm.py --help``.

The code lives in ``noisylabels/slurm.py`` (installed as the ``noisy-labels-slurm`` command);
this file lets a clone run it as ``python slurm.py ...``. Example::

    python slurm.py --time 24:00:00 --gpus_per_task 1 incv_train.py --dataset cifar10 \\
        --noise_pattern sym --noisy_ratio 0.2 0.5 0.8 --seed 0 1 2 3 4
"""

import sys

from noisylabels import slurm as _impl

if __name__ == "__main__":
    _impl.entry_point()
else:
    # `import slurm` from a clone gives the package's module itself, not a second copy
    sys.modules[__name__] = _impl
