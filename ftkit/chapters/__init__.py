"""One home per chapter, each with the same skeleton: `sizes.py` (its sizes per profile, one declaration the notebooks
read), its experiments, and `verdicts.py` (its claims decided from measured numbers). Chapters import the core, never
each other.

    methods          chapter 1: Full FT vs LoRA vs QLoRA (LoRA and NF4 from scratch, the side-by-side comparison)
    hyperparameters  chapter 2: sweeps, the explorer, gradient noise and accumulation
    overfitting      chapter 3: the overfitting baseline, its remedies, the scoreboard
    scaling          chapter 4: full fine-tuning sharded with FSDP, the ZeRO arithmetic
    capstone         the Colab capstone: QLoRA of a 7B model on a free T4
"""
