# The app's container image: the release build on Debian 12, run as a user without privileges.
#   docker build -t app .            (deploy/compose.yaml builds it the same way)
#   docker run --rm -e APP_POSTGRES_DSN=... -e APP_REDIS_URL=... app
# The image holds ./app (migrations are compiled in) and config/app.yaml; every key can be
# set through the environment (APP_<SECTION>_<KEY>). `make test` parses this file with
# BuildKit's own Dockerfile frontend and build checks (test/unit/test_compose.c), and checks
# that the runtime stage installs the Debian package of every library ./app links.

FROM debian:12-slim AS build
WORKDIR /src
# The build packages come from the one list the rest of the project uses.
COPY deploy/local/deps.sh deploy/local/deps.sh
RUN sh deploy/local/deps.sh build && rm -rf /var/lib/apt/lists/*
COPY Makefile ./
COPY src src
COPY adapters adapters
COPY contexts contexts
RUN make -j"$(nproc)" app

FROM debian:12-slim
# The shared libraries ./app links (and the CA roots, for a Kafka or PostgreSQL over TLS).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libcjson1 libevent-2.1-7 libevent-pthreads-2.1-7 libhiredis0.14 \
        libpq5 librdkafka1 libyaml-0-2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=build /src/app /usr/local/bin/app
COPY config/app.yaml /etc/app/app.yaml
# Inside a container the service must be reachable from outside its loopback.
ENV APP_HTTP_LISTEN=0.0.0.0:8080
USER app:app
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/app", "--config", "/etc/app/app.yaml"]
