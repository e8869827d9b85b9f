# engine/includes/: the Cython declarations of the native C headers (engine/native/),
# one .pxd per C unit or family; cimported by engine/_core.pyx and its includes.
