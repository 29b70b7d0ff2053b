"""The Cython kernels (histograms, gradients, warping, inversion, det J, buffer reuse)."""
