"""Regenerate the bundled sample data in src/napari_mireg/sample_data (needs nilearn)."""

from pathlib import Path

from napari_mireg.datasets import write_sample_data

if __name__ == "__main__":
    folder = Path(__file__).resolve().parents[1] / "src" / "napari_mireg" / "sample_data"
    for key, path in write_sample_data(folder).items():
        print(f"{key}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
