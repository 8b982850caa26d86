"""Chen et al., *Understanding and Utilizing Deep Neural Networks Trained with Noisy Labels*
(ICML 2019), in Keras 3: noisy cross-validation, INCV and the modified Co-teaching.

The Python API (``import noisylabels`` loads no deep-learning framework; ``clean_labels``
loads Keras when first used)::

    from noisylabels import clean_labels, select_cl, select_ncv

``clean_labels`` runs INCV on arrays (``noisylabels.incv``); ``select_cl`` and ``select_ncv``
are the confident-learning and noisy-cross-validation selectors on out-of-sample
probabilities (``noisylabels.selection``). The command-line scripts are
``noisylabels.noisy_cv`` and ``noisylabels.incv_train`` (console commands ``noisy-cv`` and
``incv-train``; ``python noisy_cv.py`` / ``python incv_train.py`` from a clone).
"""

__version__ = "0.3.0"

_API = {"clean_labels": "incv", "select_cl": "selection", "select_ncv": "selection",
        "noise_estimates": "selection"}


def __getattr__(name):
    # Lazy, so that `import noisylabels` stays cheap and framework-free (PEP 562).
    if name in _API:
        import importlib
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_API)
