"""The core: what every chapter uses, and no chapter's content (it imports no chapter).

    profiles  one setting (FTKIT_PROFILE) chooses every size
    hparams   the training settings as one object, defaults per profile and method, checks
    configs   model configs and the shape numbers that decide memory
    builtin   the models loaded without a hub: the built-in SmolLM2-135M, a second shape, a tiny test model, random weights
    models    load a model for full / lora / qlora
    data      the course dataset (sentence -> JSON record) and its metrics
    train     run_experiment: train with TRL's SFTTrainer and measure everything
    memory    training memory measured on one real step
    estimate  training memory estimated from a config; which GPU fits; sharding
    claims    the claims the course tests (CLAIMS.md) and the one verdict type
    plots     loss curves, schedules, bar charts (ax=None in, Axes out)
    checks    exercise checks that say what is wrong
    quiet     what a learner sees: one bar per run, the numbers, real warnings
    runtime   Colab or not, Google Drive
    emulation a Colab T4 on the CPU, for CI
"""
