"""A stand-in for pycuda (see ../README.md): device memory is host memory. Not pycuda."""
