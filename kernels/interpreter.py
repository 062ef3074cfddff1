"""Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``) rather than compiling them.

Triton decides when a kernel is decorated, so the flag is read once, at import, by every kernel module from here:
the launch tables, the bf16 dot workaround and the "needs CUDA" checks must agree with what Triton does.
"""
import os

try:  # Triton >= 3.4 reads its environment once, into knobs; the decorator consults it when a kernel is made.
    from triton import knobs as _knobs

    INTERPRET = bool(_knobs.runtime.interpret)
except (ImportError, AttributeError):  # older Triton reads the variable directly
    INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
