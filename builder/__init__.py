"""gpuforge farm side: the GPU x kernel x driver matrix, precompiled driver packages, images."""
