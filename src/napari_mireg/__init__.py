"""napari-mireg: mutual-information SyN registration of brain MRI, engine and napari plugin."""

from napari_mireg.engine.affine import AffineRegistration
from napari_mireg.engine.metric import MutualInformation
from napari_mireg.engine.registration import Result, register, register_steps
from napari_mireg.engine.syn import Snapshot, SymmetricDiffeomorphicRegistration
from napari_mireg.engine.transforms import AffineMap, DiffeomorphicMap

__version__ = "0.1.0"
__all__ = [
    "AffineMap",
    "AffineRegistration",
    "DiffeomorphicMap",
    "MutualInformation",
    "Result",
    "Snapshot",
    "SymmetricDiffeomorphicRegistration",
    "__version__",
    "register",
    "register_steps",
]
