#!/usr/bin/env bash
# Fetches Apache Kafka's jars (broker, KRaft storage tool, console tools) from Maven Central into
# .cache/kafka/lib, the classpath the Apache Kafka test backend and `make kafka` run from.
# Idempotent: returns at once when the jars of this pom are already there. Never fails setup:
# without Java 17+ or Maven it prints why, and the Apache Kafka tests are skipped with that reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
POM=scripts/kafka/pom.xml
DEST=.cache/kafka/lib
STAMP=$DEST/.fetched
if [[ -f $STAMP && $STAMP -nt $POM ]]; then
    exit 0
fi
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    echo "note: Java or Maven missing: Apache Kafka is not fetched, its tests will be skipped"
    exit 0
fi
major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [[ -z $major || ${major%%.*} -lt 17 ]]; then
    echo "note: Apache Kafka 4 needs Java 17+ (found ${major:-unknown}): its tests will be skipped"
    exit 0
fi
echo "fetching Apache Kafka's jars with Maven into $DEST (once)"
rm -rf "$DEST.tmp"
mkdir -p .cache/kafka
# Maven's own output goes to a log (Debian's Maven 3.8 prints colour codes even when quiet).
if ! mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$PWD/$DEST.tmp" >.cache/kafka/fetch.log 2>&1; then
    rm -rf "$DEST.tmp"
    tail -n 20 .cache/kafka/fetch.log
    echo "note: Maven could not fetch Apache Kafka (log: .cache/kafka/fetch.log): its tests will be skipped"
    exit 0
fi
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
touch "$STAMP"
