"""Chen et al., *Understanding and Utilizing Deep Neural Networks Trained with Noisy Labels*
(ICML 2019), in Keras 3: noisy cross-validation, INCV and the modified Co-teaching.

The Python API (``import noisylabels`` loads no deep-learning framework; the functions load
Keras when first used)::

    from noisylabels import clean_labels, select_cl, select_ncv

    result = clean_labels(x, y_noisy, build_model=my_model)     # INCV on arrays
    sel = select_cl(probs, y_noisy, num_classes=10)             # confident learning

and the modified Co-teaching on a selection, with the paper's settings by default::

    from noisylabels import CoTeachingConfig, Data, coteaching_plan, train_two_networks

    data = Data("mine", x_train, y_clean_or_given, x_test, y_test, num_classes)
    plan = coteaching_plan(e, noise_type="sym", num_classes=10, epochs=200)  # e_S, warm-up
    rows = train_two_networks(CoTeachingConfig(arch="resnet32"), data, y_noisy, s_idx,
                              c_idx, seed=0, out="run/", **plan)

``clean_labels``, ``INCVConfig`` and ``incv_select`` come from ``noisylabels.incv``;
``select_cl``, ``select_ncv`` and ``noise_estimates`` from ``noisylabels.selection``;
``CoTeachingConfig``, ``coteaching_plan`` (``coteaching.plan``) and ``train_two_networks``
from ``noisylabels.coteaching``; ``Data`` from ``noisylabels.data``. The command-line
scripts are ``noisylabels.noisy_cv`` and ``noisylabels.incv_train`` (console commands
``noisy-cv`` and ``incv-train``; ``python noisy_cv.py`` / ``python incv_train.py`` from a
clone).
"""

__version__ = "0.3.0"

# public name -> (module, name there)
_API = {"clean_labels": ("incv", "clean_labels"), "INCVConfig": ("incv", "INCVConfig"),
        "incv_select": ("incv", "incv_select"),
        "select_cl": ("selection", "select_cl"), "select_ncv": ("selection", "select_ncv"),
        "noise_estimates": ("selection", "noise_estimates"),
        "CoTeachingConfig": ("coteaching", "CoTeachingConfig"),
        "coteaching_plan": ("coteaching", "plan"),
        "train_two_networks": ("coteaching", "train_two_networks"),
        "Data": ("data", "Data")}


def __getattr__(name):
    # Lazy, so that `import noisylabels` stays cheap and framework-free (PEP 562).
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_API)
