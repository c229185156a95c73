#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser test when it is missing
# and we may install system packages (root with apt-get). Never fails the setup.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || exit 1
fi
command -v chromium >/dev/null 2>&1
