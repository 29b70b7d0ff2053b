"""Mutation check: put realistic bugs into a copy of the project, one at a time, and see
whether the tests that should catch each one fail.

Each mutant is an exact snippet of the package replaced by a wrong one. The snippet is
looked up in every file of the package matching a glob, so the check keeps working when code
moves between modules; a snippet found anywhere but exactly once stops the check with the
mutant's name (update the list when the code it names changes). The copy lives in a
temporary folder: the working tree is never touched. A mutant in a Cython kernel rebuilds
that one kernel in the copy (about a minute of CPU).

The optional peers (ITK, ANTsPy, SimpleITK, DIPY) are hidden from the tests by default
(stub modules that fail to import, so their tests skip): the score is that of the core
suite. ``--with-peers`` lets them in.

Usage::

    python scripts/mutation_check.py            # every mutant
    python scripts/mutation_check.py --list     # the mutants, and a check of their snippets
    python scripts/mutation_check.py -k syn     # the mutants whose name contains "syn"

Exit status 0 when the score reaches ``--target`` (default 90 %), 1 otherwise.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path("src/napari_mireg")
PEERS = ("itk", "ants", "SimpleITK", "dipy")


@dataclass(frozen=True)
class Mutant:
    """One realistic bug: `old` becomes `new` in the one package file (matching `where`)
    that holds it; `tests` (files or node ids) should fail.
    """

    name: str
    where: str
    old: str
    new: str
    tests: tuple


MUTANTS = [
    # --- kernels (Cython: each rebuilds one kernel in the copy) ---
    Mutant(
        "kernel: trilinear weight w10 takes the axes swapped",
        "**/_fields.pyx",
        "cell.w10 = f0 * (1 - f1)",
        "cell.w10 = f1 * (1 - f0)",
        ("tests/test_fields.py", "tests/test_transforms.py"),
    ),
    Mutant(
        "kernel: partial volume's nearest level floors along axis 2",
        "**/_pv.pyx",
        "k2 = <Py_ssize_t>floor(y[2] + 0.5)",
        "k2 = <Py_ssize_t>floor(y[2])",
        ("tests/test_partial_volume.py",),
    ),
    Mutant(
        "kernel: MI update coefficient drops a factor f (Horner slip)",
        "**/_mi.pyx",
        "return q[0] + f * (q[1] + f * q[2])",
        "return q[0] + f * (q[1] + q[2])",
        ("tests/test_metric.py",),
    ),
    # --- conventions ---
    Mutant(
        "conventions: dense gradient mapped to world by inv(L), not inv(L).T (issue 29)",
        "**/*.py",
        "to_physical = np.linalg.inv(linear[: samples.ndim, : samples.ndim]).T",
        "to_physical = np.linalg.inv(linear[: samples.ndim, : samples.ndim])",
        ("tests/test_conventions.py", "tests/test_metric.py"),
    ),
    Mutant(
        "conventions: metric spacing multiplies instead of divides",
        "**/*.py",
        "to_physical = np.diag(1.0 / spacing_vector(spacing, samples.ndim))",
        "to_physical = np.diag(spacing_vector(spacing, samples.ndim))",
        ("tests/test_metric.py",),
    ),
    Mutant(
        "conventions: ITK affine written column by column (issue 29, fragile)",
        "**/*.py",
        'return "AffineTransform_double_3_3", np.concatenate([lps[:3, :3].ravel(), lps[:3, 3]])',
        'return "AffineTransform_double_3_3", np.concatenate([lps[:3, :3].T.ravel(), lps[:3, 3]])',
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    Mutant(
        "conventions: ITK affine read column by column",
        "**/*.py",
        "linear = parameters[: ndim * ndim].reshape(ndim, ndim)",
        "linear = parameters[: ndim * ndim].reshape(ndim, ndim).T",
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    Mutant(
        "conventions: ITK affine's centre (FixedParameters) ignored",
        "**/*.py",
        "matrix[:ndim, ndim] = parameters[ndim * ndim :] + centre - linear @ centre",
        "matrix[:ndim, ndim] = parameters[ndim * ndim :]",
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    Mutant(
        "conventions: warp written without the LPS flip of y (issue 29, fragile)",
        "**/*.py",
        "np.asarray(displacement.field, dtype=np.float32) * np.array([-1, -1, 1], np.float32)",
        "np.asarray(displacement.field, dtype=np.float32) * np.array([-1, 1, 1], np.float32)",
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    Mutant(
        "conventions: warp read without the LPS flip of x",
        "**/*.py",
        "ras = np.ascontiguousarray(data * np.float32([-1, -1, 1])",
        "ras = np.ascontiguousarray(data * np.float32([1, -1, 1])",
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    # --- the SyN loop ---
    Mutant(
        "syn: update composed after the half-map, not before (issue 29)",
        "**/*.py",
        "field = fields.compose(update, half_map, affine)",
        "field = fields.compose(half_map, update, affine)",
        ("tests/test_syn_parts.py", "tests/test_syn.py"),
    ),
    Mutant(
        "syn: pyramid sigma in mm used as voxels (issue 29, fragile)",
        "**/*.py",
        "fields.smooth(fixed_volume.data, sigma_mm / fixed_volume.spacing)",
        "fields.smooth(fixed_volume.data, sigma_mm)",
        ("tests/test_syn_parts.py", "tests/test_pyramid.py"),
    ),
    Mutant(
        "syn: step length taken as mm, not voxels of the level",
        "**/*.py",
        "step_mm = self.step_length * fields.voxel_sizes(affine).min()",
        "step_mm = self.step_length",
        ("tests/test_syn_parts.py", "tests/test_syn.py"),
    ),
    Mutant(
        "syn: the non-symmetric map takes one half-map's step",
        "**/*.py",
        "step_mm * (1 if self.symmetric else 2)",
        "step_mm",
        ("tests/test_syn_parts.py", "tests/test_syn.py"),
    ),
    Mutant(
        "syn: the fixed half-map moves by the forward update",
        "**/*.py",
        "fixed_moved = self._step(half_fixed, backward_update, affine)",
        "fixed_moved = self._step(half_fixed, forward_update, affine)",
        ("tests/test_syn_parts.py", "tests/test_syn.py"),
    ),
    Mutant(
        "syn: update not zeroed on the boundary before smoothing",
        "**/*.py",
        "    _zero_boundary(update)\n    smoothed = ",
        "    smoothed = ",
        ("tests/test_syn_parts.py", "tests/test_syn.py"),
    ),
    # --- files ---
    Mutant(
        "files: an inverted affine is read as it is",
        "**/*.py",
        "return AffineMap(np.linalg.inv(matrix) if invert else matrix, ndim)",
        "return AffineMap(matrix, ndim)",
        ("tests/test_conventions.py", "tests/test_files.py"),
    ),
    # --- options ---
    Mutant(
        "options: all-zero iterations (affine only) refused (issue 29: 40x0)",
        "**/*.py",
        '    if not values:\n        raise OptionError(option, "name at least one level',
        '    if not any(values):\n        raise OptionError(option, "name at least one level',
        ("tests/test_bad_inputs.py",),
    ),
    Mutant(
        "options: a level of 0 iterations refused (issue 29: 40x0)",
        "**/*.py",
        "if min(values) < 0 or max(values) > most:",
        "if min(values) < 1 or max(values) > most:",
        ("tests/test_bad_inputs.py", "tests/test_options.py"),
    ),
    Mutant(
        "options: a step length of 0 accepted",
        "**/*.py",
        "        high=10.0,\n        low_open=True,",
        "        high=10.0,\n        low_open=False,",
        ("tests/test_options.py",),
    ),
    # --- reader ---
    Mutant(
        "reader: label names matched against the whole path (issue 29)",
        "**/*.py",
        "LABEL_NAME_PATTERN.search(Path(path).name)",
        "LABEL_NAME_PATTERN.search(str(path))",
        ("tests/test_reader.py",),
    ),
    Mutant(
        "reader: the distinct-value boundary off by one",
        "**/*.py",
        "if values.size <= FEW_VALUES:",
        "if values.size < FEW_VALUES:",
        ("tests/test_reader.py",),
    ),
    Mutant(
        "reader: one FreeSurfer id makes a label map",
        "**/*.py",
        "return bool(np.all(np.isin(values, KNOWN_LABELS)))",
        "return bool(np.any(np.isin(values, KNOWN_LABELS)))",
        ("tests/test_reader.py",),
    ),
    # --- widget ---
    Mutant(
        "widget: the same layer accepted as fixed and moving",
        "**/*.py",
        "        if fixed_name == moving_name:",
        "        if fixed_name == moving_name and fixed_name is None:",
        (
            "tests/test_widget.py::test_bad_starts_are_refused_with_a_message",
            "tests/test_widget.py::test_docked_from_the_plugins_menu_the_same_layer_twice_is_refused",
        ),
    ),
]


def locate(tree, mutant):
    """The one package file of `tree` holding `mutant.old`; stops the check otherwise."""
    hits = [
        path
        for path in sorted((tree / PACKAGE).glob(mutant.where))
        if path.is_file()
        for _ in range(path.read_text(errors="replace").count(mutant.old))
    ]
    if len(hits) != 1:
        sys.exit(
            f"mutant {mutant.name!r}: its snippet is found {len(hits)} times under "
            f"{PACKAGE}/{mutant.where} (it must be exactly once): {mutant.old!r}"
        )
    return hits[0]


def copy_tree(destination):
    """The tracked and untracked (not ignored) files of the project, and its built kernels."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    kernels = [p.relative_to(ROOT) for p in (ROOT / PACKAGE).rglob("*.so")]
    for name in [*filter(None, listed), *map(str, kernels)]:
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def peer_blocker(folder):
    """Modules named as the optional peers that fail to import (their tests then skip)."""
    folder.mkdir()
    for name in PEERS:
        (folder / f"{name}.py").write_text(
            f"raise ModuleNotFoundError('{name} hidden by mutation_check.py', name='{name}')\n"
        )
    return folder


def rebuild_kernel(tree, pyx):
    """Build the one kernel `pyx` in place in `tree` (setup.py's flags, one extension).

    Needs Cython (the build requirement of pyproject.toml); stops the check if it fails.
    """
    name = pyx.stem
    program = (
        "import sys, setuptools, Cython.Build as build\n"
        "plain_setup = setuptools.setup\n"
        "setuptools.setup = lambda **kw: plain_setup(package_dir={'': 'src'}, **kw)\n"
        "original = build.cythonize\n"
        f"build.cythonize = lambda modules, **kw: original("
        f"[m for m in modules if m.name.endswith('.{name}')], **kw)\n"
        "sys.argv = ['setup.py', 'build_ext', '--inplace', '-q']\n"
        "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__name__': '__main__'})\n"
    )
    # pyproject.toml out of the way: an older setuptools than the build requirement refuses
    # its license expression, and the build needs nothing from it.
    project = tree / "pyproject.toml"
    aside = project.rename(tree / "pyproject.toml.aside")
    try:
        done = subprocess.run(
            [sys.executable, "-c", program], cwd=tree, capture_output=True, text=True
        )
    finally:
        aside.rename(project)
    if done.returncode != 0:  # a mutant that does not compile tells nothing about the tests
        sys.exit(f"{pyx.name} does not build:\n{done.stderr.strip()}")


def run_tests(tree, tests, environment, timeout):
    """Run pytest on `tests` in `tree`: 'caught', 'survived' or 'caught (...)'."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        *tests,
    ]
    try:
        done = subprocess.run(
            command, cwd=tree, env=environment, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "caught (timeout)", ""
    lines = done.stdout.strip().splitlines() or [""]
    failed = [line.split()[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    summary = lines[-1] + (f"; first: {failed[0]}" if failed else "")
    if done.returncode == 0:
        return "survived", summary
    if done.returncode == 1:
        return "caught", summary
    return f"caught (pytest exit {done.returncode})", summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--with-peers", action="store_true", help="let ITK/ANTs/DIPY in")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant")
    parser.add_argument("--target", type=float, default=90.0, help="score to reach (%%)")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    for mutant in chosen:
        locate(ROOT, mutant)  # every snippet is checked before any work
    if args.list:
        for mutant in chosen:
            where = locate(ROOT, mutant).relative_to(ROOT)
            print(f"{mutant.name}\n    {where}; tests: {' '.join(mutant.tests)}")
        print(f"{len(chosen)} mutants, every snippet found exactly once")
        return 0

    with tempfile.TemporaryDirectory(prefix="mutation-check-") as temporary:
        tree = Path(temporary) / "tree"
        copy_tree(tree)
        environment = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        paths = [str(tree / "src")]
        if not args.with_peers:
            paths.insert(0, str(peer_blocker(Path(temporary) / "no-peers")))
        environment["PYTHONPATH"] = os.pathsep.join(
            paths + [p for p in [os.environ.get("PYTHONPATH")] if p]
        )
        print(f"copy: {tree}; peers {'in' if args.with_peers else 'hidden'}", flush=True)
        # The tests must pass on the unchanged copy, or no outcome below means anything.
        targets = list(dict.fromkeys(t for m in chosen for t in m.tests))
        outcome, summary = run_tests(tree, targets, environment, args.timeout * 2)
        print(f"unchanged copy: {summary}", flush=True)
        if outcome != "survived":
            sys.exit("the tests fail on the unchanged copy: fix them before checking mutants")
        results = []
        for number, mutant in enumerate(chosen, 1):
            path = locate(tree, mutant)
            original = path.read_text()
            built = {p: p.read_bytes() for p in path.parent.glob(f"{path.stem}.*.so")}
            started = time.monotonic()
            path.write_text(original.replace(mutant.old, mutant.new))
            try:
                if path.suffix == ".pyx":
                    rebuild_kernel(tree, path)
                outcome, summary = run_tests(tree, mutant.tests, environment, args.timeout)
            finally:
                path.write_text(original)
                for so, data in built.items():
                    so.write_bytes(data)
            results.append((mutant, outcome))
            print(
                f"[{number:2d}/{len(chosen)}] {outcome:9s} {mutant.name} "
                f"({time.monotonic() - started:.0f} s; {summary})",
                flush=True,
            )
    caught = [m for m, outcome in results if outcome.startswith("caught")]
    survivors = [m for m, outcome in results if outcome == "survived"]
    score = 100.0 * len(caught) / max(1, len(results))
    print(f"\nscore: {len(caught)}/{len(results)} caught ({score:.0f} %)")
    for mutant in survivors:
        print(f"survived: {mutant.name} ({mutant.where}: {mutant.old!r})")
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
