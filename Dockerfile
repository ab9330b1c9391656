# The image the KubeRay manifests (cluster/k8s/) run: Ray 2.60 with rayfolio and its
# dependencies.  docker build -t rayfolio:0.1.0 .
# (GPU workers: build FROM rayproject/ray:2.60.0-py311-gpu and tag rayfolio:0.1.0-gpu.)
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}
COPY --chown=ray:users . /home/ray/rayfolio
# torch first, pinned: an open range would pull another build. The export extra: the served image
# can run forecaster_runtime onnx / onnx-int8.
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir "/home/ray/rayfolio[export]"
WORKDIR /home/ray
