"""Models trained by `fermion train`, as serving sees them.

The registry's on-disk format and reading side (`registry`), the input encoders that training and
serving share (`features`), `TrainingError` (`errors`) and the `model:NAME@VERSION` adapter
(`adapter`). Training (`fermion.train`) writes versions; nothing here imports it.
"""
