import numpy_but_misspelled  # noqa: F401

from fermion import Service, endpoint


class Model(Service):
    @endpoint
    def predict(self, text: str) -> str:
        return text
