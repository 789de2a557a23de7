# The preferred base when a container registry answers: the official slim Python image with the
# scientific packages. Without a registry, build-offline.sh makes an equivalent base from Debian.
FROM python:3.12-slim
RUN pip install --no-cache-dir numpy pandas matplotlib
