from fermion import Service, endpoint


class Bad(Service):
    @endpoint(max_batch_size=8)
    def embed(self, text: str) -> list[float]:
        return [0.0]
