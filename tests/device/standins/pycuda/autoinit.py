"""`import pycuda.autoinit` makes a context current on device 0; here it only initialises."""

from pycuda import driver

driver.init()
