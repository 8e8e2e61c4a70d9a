import os

# the test machine is shared: keep numba single-threaded
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
