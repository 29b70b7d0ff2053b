"""The registration engine: MI prealignment, MI-SyN, the metrics, transforms and fields.

Nothing here imports Qt or napari; the widget, the ``mireg`` command line and the cohort
runner all drive the engine through :func:`~napari_mireg.engine.registration.register` and
:func:`~napari_mireg.engine.registration.register_steps`.
"""
