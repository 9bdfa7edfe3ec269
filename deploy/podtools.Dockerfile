# syntax=docker/dockerfile:1
# podtools: what runs in a job's configuration and publishing pods (podtools configure, podtools
# publish). Python's standard library, boto3 for S3, and a POSIX shell (the pods' command lines
# are short sh scripts around podtools: see engine_svc/infra/kubernetes/specs.py).
# Build from the repository's root:
#   docker build -f deploy/podtools.Dockerfile -t c2d-podtools:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/c2d
COPY requirements.lock /tmp/requirements.lock
RUN pip install --constraint /tmp/requirements.lock boto3 && rm /tmp/requirements.lock
COPY podtools /opt/c2d/podtools
# Bytecode now: the pods' root filesystem is read-only.
RUN python -m compileall -q /opt/c2d/podtools
USER 65534:65534
WORKDIR /tmp
