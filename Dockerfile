# One image for every swapflow process (api, worker, adapter, migrate); the command picks the part.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY swapflow ./swapflow
RUN pip install --no-cache-dir .
ENV SWAPFLOW_API_HOST=0.0.0.0 \
    SWAPFLOW_DATA_DIR=/var/lib/swapflow
ENTRYPOINT ["swapflow"]
CMD ["api"]
