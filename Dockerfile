# The autologs worker image (used by docker-compose.yml; not exercised on the project's own machines).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY autologs autologs
COPY schemas schemas
COPY streams streams
COPY processors processors
COPY sinks sinks
COPY query query
COPY api api
COPY replay replay
COPY bench bench
COPY clickhouse clickhouse
RUN pip install --no-cache-dir -e .
ENV AUTOLOGS_DATA_DIR=/data
VOLUME /data
EXPOSE 6066
CMD ["autologs", "worker"]
