# meterline processes (worker, HTTP edge, Stripe sink) from one image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
# The rocksdb extra: METERLINE_STORE=rocksdb imports rocksdict.
RUN pip install --no-cache-dir ".[rocksdb]"
ENV METERLINE_HTTP_HOST=0.0.0.0 METERLINE_WORKER_WEB_HOST=0.0.0.0 METERLINE_DATA_DIR=/var/lib/meterline
ENTRYPOINT ["meterline"]
