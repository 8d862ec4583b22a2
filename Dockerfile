# streamrec worker / API / training image. `docker compose up` runs it three ways:
#   init (streamrec train && feast apply && feast materialize), worker (streamrec stream), api (streamrec serve).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMREC_DATA_DIR=/data \
    STREAMREC_FEATURE_REPO=/app/feature_repo

# OpenMP runtime for faiss-cpu and implicit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first (from pyproject.toml only), so code edits do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 streamrec \
 && mkdir -p /data \
 && chown -R streamrec /data

USER streamrec
VOLUME ["/data"]
EXPOSE 8000

CMD ["streamrec", "serve"]
