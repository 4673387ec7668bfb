from fermion import Service, endpoint


class Broken(Service):
    @endpoint
    def predict(self, text: str) -> str
        return text
