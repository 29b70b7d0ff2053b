"""Regenerate the bundled sample data in src/napari_mireg/sample_data (needs nilearn)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata

from testdata import write_sample_data

if __name__ == "__main__":
    folder = Path(__file__).resolve().parents[1] / "src" / "napari_mireg" / "sample_data"
    for key, path in write_sample_data(folder).items():
        print(f"{key}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
