# One image for every role of the topology: migrate, worker, beat, Flower and the admin API.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingestion ./ingestion
COPY providers ./providers
RUN pip install . \
    && useradd --create-home --uid 10001 ingestion

# Your own providers: copy or install the package that builds your IncrementalIngestion and
# point INGESTION_APP at it (the module you give celery -A).
ENV INGESTION_APP=providers.demo.app
USER ingestion
EXPOSE 8000 5555
CMD ["ingestion", "--help"]
