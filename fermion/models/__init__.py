"""Prebuilt adapters: a model source string (`st:`, `hf:`, `sklearn:`, `onnx:`) becomes a Service.

Each adapter lives in its own module and imports its heavy libraries only when used.
"""
