"""Where the course runs: a Colab runtime or not, and Google Drive, whose folders outlive a disconnected runtime.

Used by the doctor, chapter 3's shared rows and the capstone's checkpoints.
"""

from __future__ import annotations

import sys
from pathlib import Path


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


DRIVE = Path("/content/drive")


def mount_drive() -> bool:
    """Mount Google Drive on Colab (asks for access); False, cleanly, anywhere else or when refused."""
    if not in_colab():
        print("Not on Colab: checkpoints stay in a local outputs/ folder.")
        return False
    try:
        from google.colab import drive

        drive.mount(str(DRIVE))
        return True
    except Exception as err:  # refused, timed out, or Drive unavailable
        print(f"Google Drive not mounted ({type(err).__name__}): checkpoints stay on this runtime's disk, "
              "and a disconnect loses them.")
        return False


def drive_dir(name: str) -> Path | None:
    """MyDrive/ftkit/<name> when Google Drive is mounted on Colab, else None."""
    my_drive = DRIVE / "MyDrive"
    return my_drive / "ftkit" / name if in_colab() and my_drive.is_dir() else None
