"""Pretraining methods; importing this package registers them all."""

from divssl.methods.base import Method, StepOutput, get_method, method_names, register_method

__all__ = ["Method", "StepOutput", "get_method", "method_names", "register_method"]
