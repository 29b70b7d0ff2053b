"""The napari side: the dock widget and its parts, the reader, the writer, the sample pair and
the plugin manifest (``napari.yaml``). The only part of the package that imports Qt or napari.
"""
