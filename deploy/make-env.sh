#!/usr/bin/env sh
# Writes the secrets of the Docker deployment to deploy/.env (or FILE), once: the job-service's own
# secret, and each Orthanc server's secret made from it for that server's URL (HMAC-SHA256 in hex, as
# `orthanc-jobs server-secret URL` prints it). A server's secret lets its plugin speak for that server only.
#   deploy/make-env.sh [FILE]
set -eu
file=${1:-"$(dirname "$0")/.env"}
if [ -e "$file" ] && grep -q '^ORTHANC_JOBS_SECRET=' "$file"; then
    echo "$file holds secrets already: left as it is" >&2
    exit 0
fi
secret=$(openssl rand -hex 24)
umask 077
{
    echo "ORTHANC_JOBS_SECRET=$secret"
    for n in 1 2 3; do
        server=$(printf %s "http://orthanc-$n:8042" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.*= *//')
        echo "ORTHANC_${n}_SECRET=$server"
    done
} >>"$file"
echo "secrets written to $file (keep it private; never commit it)"
