"""Prebuilt adapters: a model source string (`st:`, `hf:`, `sklearn:`, `onnx:`, `model:`) becomes a Service.

Each adapter lives in its own module and imports its heavy libraries only when used. What they
share is in `kinds` (`SourceError`, the extra each kind needs); models trained by `fermion train`
are read through `trained` (registry, input encoders), which never imports the trainer.
"""
