from fermion import Service, endpoint


class First(Service):
    @endpoint
    def predict(self, text: str) -> str:
        return text


class Second(Service):
    @endpoint
    def predict(self, text: str) -> str:
        return text[::-1]
