# The image infra/compose.yaml runs: jiayi and its pinned dependencies, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY consumers ./consumers
COPY domain ./domain
COPY jiayi ./jiayi
COPY projections ./projections
COPY runtime ./runtime
COPY eventstore ./eventstore
COPY audit ./audit
RUN pip install --no-cache-dir . && useradd --system --home /app jiayi \
    && mkdir -p /app/var && chown jiayi /app/var
USER jiayi
ENV JIAYI_DATA_DIR=/app/var
CMD ["jiayi", "serve", "--host", "0.0.0.0", "--port", "8000"]
