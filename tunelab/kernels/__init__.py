"""Speed kernels, each exactly equal to the plain computation and tested against it."""
