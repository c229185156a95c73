#!/usr/bin/env bash
# Installs Debian's kcat and jq for the README's kcat recipes and their test
# (tests/app/test_kcat_recipes.py) when they are missing and we may install system packages
# (root with apt-get). kcat 1.7 talks to Apache Kafka 4.4, not to the embedded Tansu broker.
# Never fails the setup: without them those tests are skipped with the reason.
set -u
missing=()
for tool in kcat jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "could not install ${missing[*]}: the kcat recipe test will be skipped"
else
  echo "${missing[*]} not installed (needs root and apt-get): the kcat recipe test will be skipped"
fi
exit 0
