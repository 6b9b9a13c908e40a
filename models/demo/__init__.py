"""The demo preset's models, fitted by this project to the synthetic world (``fit_demo_models.py``).

``data``: the train-split clips every fit reads (the only way fits see stimuli); one module per
component (``zeroscope``, ``blip``, ``clip``, ``classifiers``) builds a :class:`data.FitStep`;
``fit`` runs the steps in order through ``models.training.fit`` and writes each model in the
Hugging Face ``save_pretrained`` layout under ``models_demo/`` (``utils.layout``).
"""
