"""The anatomical planes of the canvas, shown as radiologists' viewers show them.

Layers hold their volumes on (S, A, R) display axes (see `display`), whatever the file's
orientation. Which two of them the 2D canvas shows is napari's dims order (the last two
displayed axes are the canvas rows and columns); which way they run on the screen is the
camera's 2D orientation. As ITK-SNAP, 3D Slicer and FSLeyes do by default, the vertical
axis grows upwards (anterior at the top of axial slices, superior at the top of coronal
and sagittal ones) and the horizontal axis leftwards (radiological convention: the
patient's right on the left of the screen; anterior on the left of sagittal slices). Only
the view changes: the layers' data and world coordinates stay as they are.
Letters at the canvas edges name the direction each edge faces.
"""

from napari.components.overlays import TextOverlay

# Dims order of each plane over the display axes (0 S, 1 A, 2 R): the last two are shown.
PLANES = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
# Camera orientation on the screen: the row axis grows upwards, the column axis leftwards.
SCREEN_ORIENTATION = ("up", "left")
# Letters of the positive and the negative end of each display axis.
AXIS_LETTERS = (("S", "I"), ("A", "P"), ("R", "L"))
# The canvas overlays that carry the letters, by the edge they sit at.
EDGES = {
    "top": "top_center",
    "bottom": "bottom_center",
    "left": "middle_left",
    "right": "middle_right",
}
OVERLAY_PREFIX = "mireg_orientation_"


def edge_letters(plane):
    """The letter at each canvas edge ("top", "bottom", "left", "right") of a plane.

    Parameters
    ----------
    plane : {"axial", "coronal", "sagittal"}

    Returns
    -------
    dict of str
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {tuple(PLANES)}, got {plane!r}")
    rows, columns = PLANES[plane][-2:]
    # Rows grow upwards: their positive end is at the top; columns grow leftwards.
    return {
        "top": AXIS_LETTERS[rows][0],
        "bottom": AXIS_LETTERS[rows][1],
        "left": AXIS_LETTERS[columns][0],
        "right": AXIS_LETTERS[columns][1],
    }


class AnatomicalPlanes:
    """Put one anatomical plane on the 2D canvas, the right way up, with edge letters.

    Only a viewer of 3D volumes is turned: 2D images keep napari's orientation, unlettered.

    Parameters
    ----------
    viewer : napari.Viewer
    plane : {"axial", "coronal", "sagittal"}
    """

    def __init__(self, viewer, plane="axial"):
        self.viewer = viewer
        self.plane = plane
        # napari's own orientation, for viewers of 2D images (not anatomy: not turned).
        self._default_orientation = tuple(viewer.scene.camera.orientation2d)
        overlays = viewer.canvas.overlays
        for edge, position in EDGES.items():
            name = OVERLAY_PREFIX + edge
            if name not in overlays:
                overlays[name] = TextOverlay(
                    position=position, font_size=14, color="yellow", box=False
                )
        # napari sets its own dims order when the number of dimensions changes (the first
        # volume opened): the plane is put back then. The view and its letters outlive the
        # panel: closing it leaves them right.
        viewer.dims.events.ndim.connect(self._dims_changed)
        viewer.dims.events.ndisplay.connect(self._dims_changed)
        self.show(plane, reset=False)

    def overlay(self, edge):
        """The text overlay at a canvas edge ("top", "bottom", "left" or "right")."""
        return self.viewer.canvas.overlays[OVERLAY_PREFIX + edge]

    def show(self, plane, reset=True):
        """Show `plane` ("axial", "coronal" or "sagittal"); `reset` fits it to the canvas."""
        letters = edge_letters(plane)
        self.plane = plane
        dims = self.viewer.dims
        three_d = dims.ndim == 3
        if three_d and tuple(dims.order) != PLANES[plane]:
            dims.order = PLANES[plane]
        camera = self.viewer.scene.camera
        camera.orientation2d = SCREEN_ORIENTATION if three_d else self._default_orientation
        for edge, letter in letters.items():
            overlay = self.overlay(edge)
            overlay.text = letter
            overlay.visible = three_d and dims.ndisplay == 2
        if reset and three_d:
            self.viewer.reset_view()

    def _dims_changed(self, _event=None):
        self.show(self.plane, reset=False)
