# reportqa service image (CPU only). The index is built at first start into the /data volume.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    HOST=0.0.0.0 PORT=8000 REPORTQA_INDEX_DIR=/data/index REPORTQA_WORKERS=1
WORKDIR /app

# torch first, CPU build only (a plain `torch` would pull several GB of CUDA libraries)
COPY requirements/torch.txt requirements/torch.txt
RUN pip install --index-url https://download.pytorch.org/whl/cpu -r requirements/torch.txt

COPY pyproject.toml README.md ./
COPY indexer indexer
COPY service service
COPY eval eval
RUN pip install ".[qdrant]"
# /v1/ask's reader (the bundled MiniLM with the shipped adapters merged) exported to ONNX once, into the image
ENV XDG_CACHE_HOME=/app/.cache
RUN python -m service.ask.reader
COPY corpus corpus

EXPOSE 8000
VOLUME ["/data"]
# alone: build the index if needed, then serve (REPORTQA_WORKERS processes); docker-compose.yml runs the
# indexer and the api replicas as separate services from this same image
CMD ["sh", "-c", "python -m indexer ensure --corpus corpus --out \"$REPORTQA_INDEX_DIR\" --no-progress && python -m indexer export-onnx --out \"$REPORTQA_INDEX_DIR\" && exec python -m service"]
