# Stand-in for postgres:16 built from Debian 12's PostgreSQL 15 (see build.sh). Same contract as
# the official image for what docker-compose.yml uses: POSTGRES_USER/_PASSWORD/_DB, the data in
# /var/lib/postgresql/data, *.sql in /docker-entrypoint-initdb.d run on the first start, and
# pg_isready on the PATH.
ARG BASE=transferlab-local/python:3.11-bookworm
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/run/postgresql /var/lib/postgresql/data /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
