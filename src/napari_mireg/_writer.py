"""napari writer for displacement fields (ITK/ANTs NIfTI warps).

The widget's "displacement" layer shows the length of the forward field; its metadata holds
the field itself on the fixed image's original grid (``metadata["displacement"]``, a
DisplacementField). Saving that layer writes the warp ANTs and SimpleITK read.
"""

from napari_mireg import files


def write_displacement(path, data, meta):
    """npe2 single-layer writer: returns the written paths ([] if the layer has no field)."""
    field = meta.get("metadata", {}).get("displacement")
    if field is None:
        return []
    if files.suffix_of(path) not in (".nii", ".nii.gz"):
        path = f"{path}.nii.gz"
    files.save_field(field, path)
    return [str(path)]
