# One image for every Overland service; `overland-service policy|vswitch|replica ...` picks which.
#
# No registry is needed: the default BASE is the Debian root that tools/build_images.py makes with
# debootstrap, and the project and all its dependencies come as wheels built on the host into
# build/wheelhouse/{deps,project} (`make images` does both). Where a registry is reachable, any
# Debian-based Python 3.11 image works as the base:
#   pip wheel --wheel-dir build/wheelhouse/deps . './sdk[cli]'
#   mkdir -p build/wheelhouse/project && mv build/wheelhouse/deps/overland_* build/wheelhouse/project/
#   docker build --build-arg BASE=python:3.11-slim -t overland/overland:0.1.0 .
ARG BASE=overland/base:bookworm

FROM ${BASE} AS install
# Dependencies first: this layer changes only when a pin does, so source changes rebuild in seconds.
COPY build/wheelhouse/deps/ /tmp/wheelhouse/deps/
# --no-index: the build must not reach a package index; every wheel is in the wheelhouse.
RUN python3 -m venv /opt/overland \
 && /opt/overland/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheelhouse/deps/*.whl
COPY build/wheelhouse/project/ /tmp/wheelhouse/project/
# The SDK with its cli extra: the overland command, for an operator in a pod.
RUN /opt/overland/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse/deps \
      --find-links /tmp/wheelhouse/project overland-services 'overland-sdk[cli]' \
 && /opt/overland/bin/pip check \
 && /opt/overland/bin/python -c "import services, overland.v1" \
 && /opt/overland/bin/overland --help >/dev/null

# A second stage on the same base, so the wheelhouse never becomes a layer of the final image.
FROM ${BASE}
COPY --from=install /opt/overland /opt/overland
RUN printf '#!/bin/sh\nexec /opt/overland/bin/python -m services "$@"\n' >/usr/local/bin/overland-service \
 && chmod 0755 /usr/local/bin/overland-service \
 && mkdir -p /var/lib/overland
ENV PATH=/opt/overland/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/overland
ENTRYPOINT ["overland-service"]
CMD ["--help"]
