"""LitServe: echo unbatched, MiniLM batched (max_batch_size=32, batch_timeout=0.01), one inference worker."""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run time
# to build its request model, and a string annotation would turn the body into a query parameter.
from typing import Any

import litserve as ls
from _common import EchoIn, arguments, load_minilm


class EchoAPI(ls.LitAPI):
    """{"text": ...} → {"output": text}, validated by the same pydantic model."""

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: EchoIn) -> str:
        return request.text

    def predict(self, text: str) -> str:
        return text

    def encode_response(self, output: str) -> dict[str, str]:
        return {"output": output}


class EmbedAPI(ls.LitAPI):
    """{"text": ...} → the 384 floats, batched by LitServe."""

    def setup(self, device: str) -> None:
        self.model = load_minilm()

    def decode_request(self, request: EchoIn) -> str:
        return request.text

    def predict(self, texts: list[str]) -> Any:
        return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    def encode_response(self, vector: Any) -> list[float]:
        return vector.tolist()


if __name__ == "__main__":
    args = arguments("LitServe")
    if args.bench == "echo":
        api: ls.LitAPI = EchoAPI(api_path="/echo")
    else:
        api = EmbedAPI(api_path="/embed", max_batch_size=32, batch_timeout=0.01)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)
