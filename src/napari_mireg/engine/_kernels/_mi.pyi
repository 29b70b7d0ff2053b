"""Type stub of the compiled kernel module _mi.pyx: its functions are typed Any.

The arguments are typed memoryviews checked by Cython at the call; the Python wrappers in
napari_mireg.engine carry the annotations.
"""

from typing import Any

def __getattr__(name: str) -> Any: ...
