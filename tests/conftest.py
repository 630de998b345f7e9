"""Shared fixtures: the tiny random model (fast, offline) and the built-in real model (cached by prefetch)."""

import os

import pytest

os.environ.setdefault("FTKIT_PROFILE", "ci")


@pytest.fixture(scope="session")
def profile():
    import ftkit

    return ftkit.get_profile("ci")


@pytest.fixture(scope="session")
def tiny_data():
    import ftkit

    return ftkit.load_course_dataset(n_train=32, n_validation=8, n_test=8, n_heldout=8, seed=0)
