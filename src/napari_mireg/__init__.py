"""napari-mireg: mutual-information SyN registration of brain MRI, engine and napari plugin."""

from napari_mireg.metric import MutualInformation

__version__ = "0.1.0"
__all__ = ["MutualInformation", "__version__"]
