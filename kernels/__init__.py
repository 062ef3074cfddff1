"""Triton kernels of reasonless (installed as reasonless.kernels): attention for training and sampling."""
